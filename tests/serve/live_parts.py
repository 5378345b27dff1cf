"""Reading what the live view sends: JPEGs, and the parts of an MJPEG
(multipart/x-mixed-replace) body, parsed by hand as a browser would."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from adedge.runtime.serve.live_view import MJPEG_BOUNDARY


def decode(jpeg: bytes) -> np.ndarray:
    """The BGR image of ``jpeg``; AssertionError if it is not one."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, f"not a JPEG ({len(jpeg)} bytes: {jpeg[:16]!r})"
    return image


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]
    jpeg: bytes

    @property
    def seq(self) -> int:
        return int(self.headers["X-Frame-Seq"])


def split_parts(data: bytes) -> tuple[list[Part], int]:
    """The whole parts at the start of an MJPEG body (boundary ``frame``, each
    part with its Content-Type and Content-Length) and where the first incomplete part
    begins; AssertionError on a malformed part."""
    marker = f"--{MJPEG_BOUNDARY}\r\n".encode()
    jpegs: list[Part] = []
    position = 0
    while True:
        if len(data) - position < len(marker):
            return jpegs, position
        assert data.startswith(marker, position), f"no boundary at {position}"
        head_end = data.find(b"\r\n\r\n", position)
        if head_end < 0:
            return jpegs, position
        lines = data[position + len(marker) : head_end].decode("ascii").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        assert headers["Content-Type"] == "image/jpeg", headers
        end = head_end + 4 + int(headers["Content-Length"])
        if len(data) < end + 2:
            return jpegs, position
        assert data[end : end + 2] == b"\r\n", "a part does not end with CRLF"
        jpegs.append(Part(headers, data[head_end + 4 : end]))
        position = end + 2
