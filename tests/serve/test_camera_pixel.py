"""Pixel decisions per camera in the service: one model (the frame bundle with a pixel
threshold: image threshold 0.5, pixel threshold 0.3, min area 20 px), four cameras on the
same folder of frames whose dim blob (80 px at grey 0.4) the image score misses:

* the card's rule: every frame anomalous through its region;
* ``pixel: false``: none (the image score alone);
* a mask over the blob: none (a masked area raises no region);
* ``min_area: 100``: none (80 px is not larger).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from bundles import pixel_frame_bundle

pytestmark = pytest.mark.runtime
FRAMES = 6
BLOB = (20, 12, 10, 8)  # x, y, w, h in a 64 x 64 frame


def blob_folder(folder: Path) -> Path:
    folder.mkdir()
    image = np.zeros((64, 64), np.uint8)
    x, y, w, h = BLOB
    image[y : y + h, x : x + w] = 102  # 0.4: under the image threshold, over the pixel one
    for index in range(FRAMES):
        cv2.imwrite(str(folder / f"frame_{index:03d}.png"), image)
    return folder


def records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in lines if r.get("type") == "frame"]


def test_each_camera_applies_its_own_pixel_settings(tmp_path) -> None:
    from adedge.runtime.serve.config import parse_config
    from adedge.runtime.serve.service import Service

    bundle = pixel_frame_bundle(tmp_path / "bundle")
    folder = blob_folder(tmp_path / "frames")
    x, y, w, h = (v / 64 for v in BLOB)
    mask = [[x - 0.05, y - 0.05], [x + w + 0.05, y - 0.05], [x + w + 0.05, y + h + 0.05],
            [x - 0.05, y + h + 0.05]]  # fmt: skip
    cameras = {
        "card": {},
        "off": {"pixel": False},
        "masked": {"masks": [mask]},
        "larger": {"min_area": 100},
    }
    logs = {name: tmp_path / f"{name}.jsonl" for name in cameras}
    config = parse_config(
        {
            "models": {"m": {"bundle": str(bundle), "max_delay_ms": 2}},
            "cameras": {
                name: {"source": str(folder), "model": "m", "jsonl": str(logs[name]), **extra}
                for name, extra in cameras.items()
            },
            "api": {"enabled": False},
            "storage": {"path": str(tmp_path / "store")},
        }
    )
    service = Service(config, lambda line: None)
    service.start()
    try:
        deadline = time.monotonic() + 60  # a bound, never a measured time
        while any(len(records(path)) < FRAMES for path in logs.values()):
            assert time.monotonic() < deadline, {n: len(records(p)) for n, p in logs.items()}
            time.sleep(0.05)
    finally:
        service.stop()
    seen = {name: records(path) for name, path in logs.items()}
    assert all(r["score"] < 0.5 for r in seen["card"])  # the image score alone misses it
    assert all(r["anomalous"] for r in seen["card"])
    assert all(r["regions"] == [{"area": 80, "box": list(BLOB)}] for r in seen["card"])
    for name in ("off", "masked", "larger"):
        assert not any(r["anomalous"] for r in seen[name]), name
    assert all("regions" not in r for r in seen["off"])
    assert all(r["regions"] == [] for r in seen["masked"] + seen["larger"])
