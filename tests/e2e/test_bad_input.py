"""Every bad input a user can type is one line naming the problem and the fix, exit 2, checked
before the work starts (not an hour into training), and nothing already written is lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli
from jsonl_records import records_of
from read_only import read_only

import adedge

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed


def stream_args(bundle: Path, *more: object) -> list[object]:
    return ["stream", "--model", bundle, "--source", "synthetic:size=64,frames=5", *more]


# --- output paths, checked before the work -------------------------------------------------


@pytest.mark.parametrize("option", ["--jsonl", "--save-video", "--summary-json"])
def test_an_output_under_a_file_is_one_line(monkeypatch, capsys, tmp_path, mean_bundle, option):
    """Before: a NotADirectoryError traceback (for --summary-json after the whole stream)."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder", encoding="utf-8")
    name = {"--jsonl": "e.jsonl", "--save-video": "v.avi", "--summary-json": "s.json"}[option]
    events = tmp_path / "events.jsonl"
    args = stream_args(mean_bundle, option, blocker / "sub" / name)
    if option != "--jsonl":
        args += ["--jsonl", events]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, option, "is a file, not a folder")
    assert not events.exists()  # refused before the stream started


@pytest.mark.parametrize("option", ["--jsonl", "--save-video", "--summary-json"])
def test_an_output_in_a_read_only_folder_is_one_line(
    monkeypatch, capsys, tmp_path, mean_bundle, option
):
    folder = tmp_path / "locked"
    folder.mkdir()
    name = {"--jsonl": "e.jsonl", "--save-video": "v.avi", "--summary-json": "s.json"}[option]
    with read_only(folder):
        code, _, err = run_cli(
            monkeypatch, capsys, *stream_args(mean_bundle, option, folder / name)
        )
    assert_one_line_error(code, err, option, "cannot write in")


def test_eval_on_a_bundle_in_a_read_only_folder(monkeypatch, capsys, tmp_path, mean_bundle):
    """Before: the whole test split was scored, then a PermissionError traceback."""
    bundle = tmp_path / "bundle"
    shutil.copytree(mean_bundle, bundle)
    with read_only(bundle):
        args = ["eval", "--model", bundle, "--data", "digits:anomaly=0"]
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert_one_line_error(code, err, "--out", "eval.json", "cannot write")
        code, _, err = run_cli(monkeypatch, capsys, *args, "--out", tmp_path / "eval.json")
    assert code == 0, err
    assert (tmp_path / "eval.json").exists()


def test_an_existing_summary_is_not_replaced_without_overwrite(
    monkeypatch, capsys, tmp_path, mean_bundle
):
    summary = tmp_path / "summary.json"
    summary.write_text("{}", encoding="utf-8")
    code, _, err = run_cli(
        monkeypatch, capsys, *stream_args(mean_bundle, "--summary-json", summary)
    )
    assert_one_line_error(code, err, "--summary-json", "already exists", "--overwrite")
    code, _, err = run_cli(
        monkeypatch, capsys, *stream_args(mean_bundle, "--summary-json", summary, "--overwrite")
    )
    assert code == 0, err
    assert '"frames_scored": 5' in summary.read_text(encoding="utf-8")


# --- values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--resize", "100000x100000"], ["resize", "16384"]),
        (["--threads", "-1"], ["--threads"]),
        (["--segment-minutes", "0"], ["--segment-minutes"]),
        (["--overwrite", "--append"], ["--overwrite", "--append"]),
        (["--source", "rtsp://cam/x?transport=quic"], ["transport"]),
    ],
)
def test_bad_stream_values_are_one_line(monkeypatch, capsys, mean_bundle, args, words):
    code, _, err = run_cli(monkeypatch, capsys, *stream_args(mean_bundle, *args))
    assert_one_line_error(code, err, *words)


@pytest.mark.parametrize(
    ("variable", "value"), [("ADEDGE_KERNELS", "bogus"), ("ADEDGE_KERNEL_THREADS", "many")]
)
def test_a_bad_kernel_variable_is_one_line(monkeypatch, capsys, mean_bundle, variable, value):
    """Before: a ValueError traceback at import."""
    from adedge.runtime import kernels

    monkeypatch.setitem(kernels._state, "environment_read", False)
    monkeypatch.setenv(variable, value)
    code, _, err = run_cli(monkeypatch, capsys, *stream_args(mean_bundle))
    assert_one_line_error(code, err, variable, value)


def test_video_of_an_unknown_type_names_the_users_path(monkeypatch, capsys, tmp_path):
    """Before: the error named the hidden temporary file."""
    target = tmp_path / "v.gif"
    code, _, err = run_cli(
        monkeypatch, capsys, "video", "--data", "digits:anomaly=0", "--out", target
    )
    assert_one_line_error(code, err, str(target), ".avi")
    assert ".partial" not in err and list(tmp_path.iterdir()) == []


# --- the command line itself -----------------------------------------------------------------


def test_version_and_help_without_bool_types(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"adedge {adedge.__version__}"
    for command in ("stream", "export", "train", "eval", "bench", "video"):
        code, out, _ = run_cli(monkeypatch, capsys, command, "--help")
        assert code == 0 and "<bool>" not in out, command
    assert "--threads" in run_cli(monkeypatch, capsys, "eval", "--help")[1]


def test_threads_every_and_an_unknown_method(monkeypatch, capsys, tmp_path, mean_bundle):
    events = tmp_path / "e.jsonl"
    code, out, err = run_cli(
        monkeypatch, capsys, "stream", "--model", mean_bundle, "--source",
        "synthetic:size=64,frames=9", "--every", "3", "--threads", "1", "--jsonl", events,
    )  # fmt: skip
    assert code == 0, err
    assert "6 left out by --every" in out
    # the test bundle's method is 'mean': it streams, with one warning line
    assert "warning: the bundle's method 'mean' is not one this adedge knows" in err
    assert len(records_of(events, "frame")) == 3


def test_frames_that_do_not_fit_the_model_are_warned_about(
    monkeypatch, capsys, tmp_path, mean_bundle
):
    """The demo's 32x32 digit model on a wide video flagged 98% of frames with no hint why."""
    events = tmp_path / "e.jsonl"
    code, _, err = run_cli(
        monkeypatch, capsys, "stream", "--model", mean_bundle, "--source",
        "synthetic:size=800x300,frames=60", "--threshold", "-1", "--jsonl", events, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    warnings = [r["text"] for r in records_of(events, "warning")]
    assert any("frames are 800x300" in w and "squashed" in w for w in warnings)
    assert any("shrunk 9x" in w for w in warnings)
    assert any("50 of the first 50 frames are above the threshold" in w for w in warnings)
    assert sum("warning:" in line for line in err.splitlines()) >= 3
