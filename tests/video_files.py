"""Reading a written video back in tests: every frame, and the rate its container says."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def read_video(path: Path) -> list[np.ndarray]:
    """Every frame of the video at ``path`` (BGR), in order."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames


def video_fps(path: Path) -> float:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return fps
