"""How commands end: 130 after Ctrl-C and 143 after SIGTERM (so `adedge export ... && deploy`
does not deploy an aborted export), 2 with one line for a source that gives nothing to score,
and never a traceback, not even for a Ctrl-C while the command line is still starting."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from cli_helpers import assert_one_line_error, run_cli
from jsonl_records import frame_records, records_of

SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def adedge(*args: object, cwd: Path) -> subprocess.Popen:
    """``adedge ARGS`` in its own process, as a user (or systemd) starts it."""
    return subprocess.Popen(
        [sys.executable, "-m", "adedge", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def signal_when(process: subprocess.Popen, ready, sig: int, limit_s: float = 120) -> tuple:
    """Send ``sig`` once ``ready()``; (stdout, stderr) of the process, which is killed if
    anything here fails (no process outlives its test)."""
    try:
        deadline = time.monotonic() + limit_s
        while not ready():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "never got ready"
            time.sleep(0.05)
        process.send_signal(sig)
        return process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.runtime
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stream_exits_130_or_143_with_every_scored_frame_written(tmp_path, mean_bundle, sig):
    """Before: an interrupted `adedge stream` exited 0."""
    events = tmp_path / "events.jsonl"
    process = adedge(
        "stream", "--model", mean_bundle, "--source", "synthetic:size=64", "--fps", "100",
        "--jsonl", events, "--quiet", cwd=tmp_path,
    )  # fmt: skip
    ready = lambda: events.exists() and len(frame_records(events)) >= 5  # noqa: E731
    out, err = signal_when(process, ready, sig)
    assert process.returncode == SIGNAL_EXIT[sig], err
    assert "Traceback" not in err and "frames" in out  # the summary still prints
    end = records_of(events, "end")
    assert len(end) == 1 and end[0]["stopped_by"] == (
        "SIGTERM" if sig == signal.SIGTERM else "Ctrl-C (SIGINT)"
    )
    assert end[0]["frames_scored"] == len(frame_records(events))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_export_exits_non_zero_and_leaves_nothing(tmp_path, trained_run, sig):
    out = tmp_path / "models" / "ygan"
    process = adedge(
        "export", "--method", "ygan", "--checkpoint", trained_run, "--out", out, cwd=tmp_path
    )
    started = time.monotonic()
    # signalled once the export is under way: its temporary bundle folder exists
    ready = lambda: any(out.parent.glob(".ygan.*")) or time.monotonic() - started > 60  # noqa: E731
    _, err = signal_when(process, ready, sig)
    assert process.returncode == SIGNAL_EXIT[sig], err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # the temporary bundle was removed


def test_train_exits_143_on_sigterm_and_says_how_to_resume(tmp_path):
    run = tmp_path / "run"
    process = adedge(
        "train", "--method", "ygan", "--data", "digits:anomaly=0", "--preset", "tiny",
        "--epochs", "50", "--out", run, "--no-monitor", cwd=tmp_path,
    )  # fmt: skip
    _, err = signal_when(process, lambda: (run / "last.pt").exists(), signal.SIGTERM)
    assert process.returncode == 143, err
    assert "--resume" in err and "Traceback" not in err


@pytest.mark.runtime
def test_ctrl_c_while_the_command_line_starts_is_one_line(tmp_path):
    """Before: a Ctrl-C while adedge imported its modules printed a traceback. From 0.1 s on
    (Python's own start, before any adedge code, takes a few tens of ms), wherever the signal
    lands: exit 130 and the one word, or, once the command has finished and the interpreter
    is closing, death by SIGINT (which a shell also reports as 130); never a traceback."""
    for delay in (0.1, 0.2, 0.3, 0.5, 0.8):
        process = adedge("stream", "--help", cwd=tmp_path)
        time.sleep(delay)
        out, err = signal_when(process, lambda: True, signal.SIGINT)
        if process.returncode == 0:  # --help finished before the signal: nothing to check
            continue
        assert "Traceback" not in err, (delay, err)
        assert process.returncode in (130, -signal.SIGINT), (delay, process.returncode, err)
        if process.returncode == 130:
            assert err.strip().splitlines()[-1] == "interrupted", (delay, err)


# --- sources that give nothing ---------------------------------------------------------------


@pytest.mark.runtime
def test_a_video_with_no_frames_exits_2(monkeypatch, capsys, tmp_path, mean_bundle):
    """Before: exit 0 and an empty summary."""
    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    writer.release()
    code, _, err = run_cli(monkeypatch, capsys, "stream", "--model", mean_bundle, "--source", empty)
    assert_one_line_error(code, err, str(empty))


@pytest.mark.runtime
def test_a_folder_of_unreadable_images_names_them_and_exits_2(
    monkeypatch, capsys, tmp_path, mean_bundle
):
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("a.png", "b.jpg", "c.png"):
        (folder / name).write_bytes(b"not an image")
    events = tmp_path / "events.jsonl"
    code, out, err = run_cli(
        monkeypatch, capsys, "stream", "--model", mean_bundle, "--source", folder, "--jsonl", events
    )
    assert_one_line_error(code, err, "no frame", "3 skipped", "a.png")
    for name in ("a.png", "b.jpg", "c.png"):  # each skipped file is named as it happens
        assert f"skipped {folder / name}" in err
    skipped = records_of(events, "skipped")
    assert [Path(r["name"]).name for r in skipped] == ["a.png", "b.jpg", "c.png"]
    assert all(r["reason"] for r in skipped)


@pytest.mark.runtime
def test_save_video_that_wrote_nothing_exits_2(monkeypatch, capsys, tmp_path, mean_bundle):
    """Before: exit 0, and no video where the user asked for one."""
    video = tmp_path / "out.avi"
    code, _, err = run_cli(
        monkeypatch, capsys, "stream", "--model", mean_bundle, "--source", "synthetic",
        "--save-video", video, "--max-frames", "0",
    )  # fmt: skip
    assert_one_line_error(code, err, "no frame", "synthetic")
    assert not video.exists()
