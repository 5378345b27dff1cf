"""Nothing produced is lost (a stream or a training run may be killed at any moment): records
under their real names while a stream runs, readable after a kill -9; earlier runs never
clobbered by surprise; whole artefacts written with the umask's permissions, and the
temporaries of killed writers cleaned up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import pytest
from cli_helpers import assert_one_line_error, run_cli
from jsonl_records import frame_records, read_records, records_of

from adedge.atomic import atomic_directory, stale_temporaries, write_json

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed

# --- kill -9 ---------------------------------------------------------------------------------

# The stream runs in a child process that also notes, after every scoring call, how many
# frames it scored and when (os.write to its own file: no buffer for the kill to lose).
KILLED_STREAM = textwrap.dedent(
    """
    import os, sys, time
    from adedge.runtime import detector

    scored = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    original = detector.Detector.score_frames

    def score_frames(self, frames):
        results = original(self, frames)
        os.write(scored, f"{len(results)} {time.time():.6f}\\n".encode())
        return results

    detector.Detector.score_frames = score_frames
    sys.argv = ["adedge", "stream", *sys.argv[2:]]
    from adedge.cli import main

    main()
    """
)
KILL_AFTER_LINES = 60
SEGMENT_MINUTES = 0.02  # 1.2 s of video per segment: 60 frames at 50 fps


def wait_for_lines(path: Path, count: int, process: subprocess.Popen, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        if path.exists() and len(path.read_bytes().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {count} lines in {limit_s} s")


def readable_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.isOpened() and cap.read()[0]:
        count += 1
    cap.release()
    return count


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_a_kill_9_loses_no_scored_frame_and_closed_video_segments_play(
    tmp_path, mean_bundle, suffix
):
    events, video, scored = tmp_path / "events.jsonl", tmp_path / f"video{suffix}", tmp_path / "s"
    args = [
        "--model", mean_bundle, "--source", "synthetic:size=64", "--fps", "50",
        "--jsonl", events, "--save-video", video, "--segment-minutes", SEGMENT_MINUTES,
        "--quiet",
    ]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_STREAM, str(scored), *map(str, args)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_lines(events, KILL_AFTER_LINES, process, limit_s=120)
        time.sleep(1.5)  # frames keep coming; the kill lands mid-stream
        killed_at = time.time()
        process.kill()  # SIGKILL: no handler, no finally, no flush
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    records = read_records(events)  # every line is whole and parses
    frames = [r["frame"] for r in records if r["type"] == "frame"]
    assert records[0]["type"] == "start" and frames == list(range(len(frames)))
    calls = [line.split() for line in scored.read_text().splitlines()]
    scored_times = [float(t) for n, t in calls for _ in range(int(n))]
    old_enough = sum(t < killed_at - 1.0 for t in scored_times)
    assert len(frames) >= old_enough > KILL_AFTER_LINES  # all scored > 1 s before the kill
    print(
        f"\nkill -9: {len(scored_times)} frames scored, {old_enough} of them more than 1 s "
        f"before the kill, {len(frames)} frame records in {events.name}"
    )

    segments = sorted(tmp_path.glob(f"video-*{suffix}"))
    assert len(segments) >= 2 and not video.exists()
    per_segment = round(SEGMENT_MINUTES * 60 * 50)
    for segment in segments[:-1]:  # closed before the kill: complete and playable
        assert readable_frames(segment) == per_segment, segment
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no hidden leftovers


def test_append_continues_a_killed_run_and_refuses_without_it(
    monkeypatch, capsys, tmp_path, mean_bundle
):
    events = tmp_path / "events.jsonl"
    base = ["stream", "--model", mean_bundle, "--source", "synthetic:size=64,frames=6"]
    assert run_cli(monkeypatch, capsys, *base, "--jsonl", events)[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, *base, "--jsonl", events)
    assert_one_line_error(code, err, "already exists", "--overwrite", "--append")
    assert run_cli(monkeypatch, capsys, *base, "--jsonl", events, "--append")[0] == 0
    assert [r["type"] for r in records_of(events, "start") + records_of(events, "end")] == [
        "start",
        "start",
        "end",
        "end",
    ]
    assert len(frame_records(events)) == 12
    assert run_cli(monkeypatch, capsys, *base, "--jsonl", events, "--overwrite")[0] == 0
    assert len(frame_records(events)) == 6


def test_a_bad_threshold_never_empties_an_existing_file(monkeypatch, capsys, tmp_path, mean_bundle):
    """Before: a NaN threshold with an existing --jsonl left a 0-byte file."""
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "frame", "frame": 0}\n', encoding="utf-8")
    for value in ("nan", "inf", "-inf"):
        code, _, err = run_cli(
            monkeypatch, capsys, "stream", "--model", mean_bundle, "--source", "synthetic",
            "--jsonl", events, "--overwrite", "--threshold", value,
        )  # fmt: skip
        assert_one_line_error(code, err, "--threshold", "finite")
    assert events.read_text(encoding="utf-8") == '{"type": "frame", "frame": 0}\n'


def test_records_to_stdout_and_everything_else_to_stderr(monkeypatch, capsys, mean_bundle):
    code, out, err = run_cli(
        monkeypatch, capsys, "stream", "--model", mean_bundle,
        "--source", "synthetic:size=64,frames=5", "--jsonl", "-",
    )  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]  # stdout is only records
    assert [r["type"] for r in records] == ["start", *["frame"] * 5, "end"]
    assert "5 scored" in err and "frame       0" in err


# --- whole artefacts: permissions and leftovers --------------------------------------------


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    previous = os.umask(0o022)
    yield set_mask
    os.umask(previous)


@pytest.mark.parametrize(
    ("mask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, file_mode, folder_mode):
    """Before: 0600 files and 0700 bundle folders whatever the umask (the Jetson unit's
    User=adedge and log readers were locked out)."""
    umask(mask)
    write_json(tmp_path / "summary.json", {"ok": True})
    with atomic_directory(tmp_path / "bundle") as folder:
        write_json(folder / "adedge.json", {})
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == folder_mode
    assert (tmp_path / "bundle" / "adedge.json").stat().st_mode & 0o777 == file_mode


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale_file = tmp_path / f".summary.json.{dead_pid}.abcd1234.partial.json"
    stale_folder = tmp_path / f".bundle.{dead_pid}.efgh5678.partial"
    live_file = tmp_path / f".summary.json.{os.getppid()}.ijkl9012.partial.json"
    old_format = tmp_path / ".summary.json.mnop3456.partial.json"  # adedge 0.1: no PID
    for path in (stale_file, live_file, old_format):
        path.write_text("half", encoding="utf-8")
    stale_folder.mkdir()
    os.utime(old_format, (time.time() - 3600, time.time() - 3600))
    other = tmp_path / ".unrelated.json.1.abcd1234.partial.json"
    other.write_text("not ours", encoding="utf-8")
    assert stale_temporaries(tmp_path / "summary.json") == sorted([stale_file, old_format])
    write_json(tmp_path / "summary.json", {"ok": True})
    with atomic_directory(tmp_path / "bundle"):
        pass
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["bundle", "summary.json", live_file.name, other.name])


@pytest.mark.parametrize("write", ["folder", "file"])
def test_a_signal_the_instant_a_temporary_appears_leaves_nothing(monkeypatch, tmp_path, write):
    """Before: an interrupt landing between ``mkdtemp`` and the ``try`` that cleans up left
    the temporary behind (a CI failure: an export interrupted as its folder appeared). The
    signal now waits until the cleanup is armed, then interrupts as usual."""
    import tempfile

    from adedge.atomic import atomic_path

    make = tempfile.mkdtemp if write == "folder" else tempfile.mkstemp

    def make_then_interrupt(*args, **kwargs):
        made = make(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # pending until the temporary's name is bound
        return made

    monkeypatch.setattr(
        tempfile, "mkdtemp" if write == "folder" else "mkstemp", make_then_interrupt
    )
    writer = atomic_directory if write == "folder" else atomic_path
    with pytest.raises(KeyboardInterrupt), writer(tmp_path / "out" / "bundle"):
        pass  # never reached: the interrupt arrives first
    assert list((tmp_path / "out").iterdir()) == []
