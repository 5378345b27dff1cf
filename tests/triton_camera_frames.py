"""One client process of the Triton tests: ``python triton_camera_frames.py BACKEND CAMERAS FRAMES``
scores, on one thread per camera sharing one Detector (one HTTP connection pool), FRAMES
frames per camera, and prints {camera: [scores]} as JSON. Camera c's frame i is
``camera_frame(c, i)``, so the test scores the same frames locally."""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
from bundles import defect_frame


def camera_frame(camera: int, index: int) -> np.ndarray:
    """A real-looking BGR frame (tests/bundles.py's defect frame) shifted and dimmed per
    camera and frame."""
    return np.roll(defect_frame(), 5 * camera + 11 * index, axis=1) // (1 + (camera + index) % 3)


def main(backend: str, cameras: int, frames: int) -> None:
    from adedge.runtime.detector import Detector

    detector = Detector(None, backend=backend)
    scores: dict[int, list[float]] = {c: [] for c in range(cameras)}
    start = threading.Barrier(cameras)

    def camera(c: int) -> None:
        start.wait(timeout=60)
        for i in range(frames):
            scores[c].append(detector.score_frames([camera_frame(c, i)])[0].score)

    threads = [threading.Thread(target=camera, args=(c,)) for c in range(cameras)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    detector.bundle.close()
    print(json.dumps(scores))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
