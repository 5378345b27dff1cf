"""Run `adedge` in-process, as a user would type it, and check its one-line errors."""

from __future__ import annotations

from adedge.cli import main


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """``adedge ARGS``: (exit code, stdout, stderr)."""
    monkeypatch.setattr("sys.argv", ["adedge", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def export_cli(monkeypatch, capsys, checkpoint, out, *extra) -> tuple[int, str]:
    """``adedge export --method ygan --checkpoint C --out OUT EXTRA...``: (code, stderr)."""
    args = ["export", "--method", "ygan", "--checkpoint", checkpoint, "--out", out, *extra]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    return code, err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    """Exit 2, one `error:` line (the last; progress lines may precede it), no traceback."""
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    for word in words:
        assert word in errors[0], (word, errors[0])
