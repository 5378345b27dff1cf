"""A live network source that drops and comes back, for real: an MJPEG-over-HTTP server (what
many IP cameras serve) on 127.0.0.1, read by OpenCV's FFmpeg, stopped for a while and started
again. The stream must say so itself, as it happens, and record it in the JSONL."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from jsonl_records import read_records

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed

BOUNDARY = "adedgeframe"
FRAME_PERIOD_S = 0.04


class MjpegCamera:
    """Serves ``/stream.mjpg`` (multipart/x-mixed-replace JPEGs at 25 fps) until stopped;
    ``start`` again serves on the same port, as a camera that rebooted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: ThreadingHTTPServer | None = None
        self.running = threading.Event()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        running = self.running

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                index = 0
                while running.is_set():
                    image = np.full((64, 64, 3), 60 + (index * 7) % 120, np.uint8)
                    cv2.putText(image, str(index % 100), (8, 40), 0, 0.9, (255, 255, 255), 2)
                    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    head += f"Content-Length: {len(jpeg)}\r\n\r\n"
                    try:
                        self.wfile.write(head.encode() + jpeg + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    index += 1
                    time.sleep(FRAME_PERIOD_S)

        return Handler

    def start(self) -> None:
        self.running.set()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """The camera goes away: open connections end, new ones are refused."""
        self.running.clear()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


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
