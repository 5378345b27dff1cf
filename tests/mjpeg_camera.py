"""A live network camera for tests: an MJPEG-over-HTTP server (what many IP cameras serve)
on 127.0.0.1, read by OpenCV's FFmpeg; stopped and started again on the same port, as a
camera that rebooted."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

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
