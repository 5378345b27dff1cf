"""A live network source that drops and comes back, for real: an MJPEG-over-HTTP server (what
many IP cameras serve) on 127.0.0.1, read by OpenCV's FFmpeg, stopped for a while and started
again. The stream must say so itself, as it happens, and record it in the JSONL."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jsonl_records import read_records
from mjpeg_camera import MjpegCamera

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def kinds(events: Path) -> list[str]:
    return [r["type"] for r in read_records(events)] if events.exists() else []


@pytest.fixture
def camera():
    server = MjpegCamera(free_port())
    server.start()
    yield server
    server.stop()


def test_a_dropped_http_camera_is_reported_reopened_and_recorded(tmp_path, mean_bundle, camera):
    events = tmp_path / "events.jsonl"
    url = f"http://127.0.0.1:{camera.port}/stream.mjpg"
    process = subprocess.Popen(
        [sys.executable, "-m", "adedge", "stream", "--model", str(mean_bundle), "--source", url,
         "--jsonl", str(events), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: kinds(events).count("frame") >= 10, 60, "frames from the camera")
        camera.stop()
        wait_for(lambda: "gap_start" in kinds(events), 30, "the gap to be recorded")
        # recorded while the camera is still away, not when it comes back
        assert "gap_end" not in kinds(events)
        time.sleep(1.0)  # a few reopen attempts fail meanwhile
        camera.start()
        wait_for(lambda: "gap_end" in kinds(events), 60, "the camera to come back")
        frames_before = kinds(events).count("frame")
        wait_for(lambda: kinds(events).count("frame") > frames_before + 5, 30, "new frames")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    records = read_records(events)
    order = [r["type"] for r in records if r["type"] != "frame"]
    gap = order.index("gap_start")
    assert order[0] == "start" and order[-1] == "end"
    assert order[gap + 1 : order.index("gap_end")] and set(
        order[gap + 1 : order.index("gap_end")]
    ) == {"reconnect"}
    reconnects = [r for r in records if r["type"] == "reconnect"]
    assert not reconnects[0]["opened"] and reconnects[-1]["opened"]  # refused, then back
    assert all("127.0.0.1" in r["source"] for r in reconnects)
    end = next(r for r in records if r["type"] == "gap_end")
    assert end["recovered"] and end["seconds"] >= 1.0 and end["reopens"] == len(reconnects)
    # adedge's own lines on the console, with the time, not only FFmpeg's
    assert "no frames (source dropped); reopening it" in err
    assert "failed, next try in" in err and "frames are back after" in err
    assert "gaps     1 without frames" in out
