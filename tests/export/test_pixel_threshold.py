"""Export's pixel threshold: a percentile of the held-out normal frames' heatmap pixels, and
a minimum area no normal frame's region exceeds but for the image threshold's quantile.

Calibrated through the runtime's Detector on the real tile bundle of tests/bundles.py whose
heatmap is the frame itself, so the expected numbers follow from the frames alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from bundles import write_tile_bundle

from adedge.bundle import CARD_NAME, TilingSpec, load_bundle
from adedge.card import MIN_AREA_FLOOR
from adedge.errors import AdedgeError
from adedge.export.pixel_threshold import calibrate_pixel_threshold
from adedge.preprocess import InputSpec
from adedge.runtime.detector import Detector


def squares(count: int = 100, side: int = 40) -> list[np.ndarray]:
    """Heatmaps of zeros, map i with one square of side i // 10 + 1 at value (i + 1) / 100."""
    maps = []
    for i in range(count):
        amap = np.zeros((side, side), np.float32)
        s = i // 10 + 1
        amap[5 : 5 + s, 7 : 7 + s] = (i + 1) / 100
        maps.append(amap)
    return maps


def test_value_is_the_percentile_and_min_area_the_quantile_of_largest_regions():
    maps = squares()
    pixel = calibrate_pixel_threshold(maps, quantile=0.99)
    value = float(np.percentile(np.concatenate([m.ravel() for m in maps]), 99.9))
    assert pixel.value == pytest.approx(value, rel=1e-6) and pixel.percentile == 99.9
    # frame i's only region is its square, above the threshold when (i + 1) / 100 > value
    largest = [(i // 10 + 1) ** 2 if (i + 1) / 100 > value else 0 for i in range(100)]
    assert max(largest) == 100  # the threshold leaves some squares above it
    assert pixel.min_area == max(1, math.ceil(np.quantile(largest, 0.99)))
    assert pixel.frame == (40, 40)


def test_min_area_never_falls_below_a_share_of_the_frame():
    maps = [np.zeros((200, 300), np.float32) for _ in range(9)]
    maps.append(np.ones((200, 300), np.float32))  # nothing above the 99.9th percentile
    pixel = calibrate_pixel_threshold(maps, quantile=0.99)
    assert pixel.min_area == math.ceil(MIN_AREA_FLOOR * 200 * 300) == 30


def test_no_heatmap_means_no_pixel_threshold_and_bad_percentiles_are_refused():
    assert calibrate_pixel_threshold([], 0.99) is None
    assert calibrate_pixel_threshold([np.full((4, 4), np.nan, np.float32)], 0.99) is None
    for bad in (0, 101, math.nan):
        with pytest.raises(AdedgeError, match="percentile"):
            calibrate_pixel_threshold(squares(), 0.99, percentile=bad)


def normal_frames(count: int = 12) -> list[np.ndarray]:
    """Grey 64 x 64 noise frames (levels 0..99, fixed seed): the 'held-out normal' images."""
    rng = np.random.default_rng(3)
    return [rng.integers(0, 100, (64, 64), dtype=np.uint8) for _ in range(count)]


def test_export_calibrates_on_the_detectors_heatmaps_and_the_card_then_decides(tmp_path: Path):
    from adedge.export.bundle_writer import pixel_threshold

    folder = write_tile_bundle(
        tmp_path / "b",
        TilingSpec((64, 64), 32, 32),
        input_spec=InputSpec(32, 32, "gray", (0.0,), (1.0,)),
    )
    detector = Detector(folder, threads=1)
    frames = normal_frames()
    _, maps, _ = detector.score_images_with_maps(frames)
    lines: list[str] = []
    pixel = pixel_threshold(maps, 0.99, "noise", lines.append)
    pixels = np.concatenate([f.ravel() / 255.0 for f in frames])
    assert pixel.value == pytest.approx(np.percentile(pixels, 99.9), abs=1e-6)  # map = frame
    lower = pixel_threshold(maps, 0.99, "noise", lines.append, percentile=50.0)  # --pixel-...
    assert lower.percentile == 50.0
    assert lower.value == pytest.approx(np.percentile(pixels, 50.0), abs=1e-6)
    assert lower.value < pixel.value
    assert pixel.frame == (64, 64) and pixel.min_area >= 3  # 0.05% of 4096 px, rounded up
    assert "pixel threshold" in lines[0] and "noise" in pixel.detail
    card = load_bundle(folder).card
    card = dataclasses.replace(card, threshold=dataclasses.replace(card.threshold, pixel=pixel))
    (folder / CARD_NAME).write_text(json.dumps(card.to_dict()), encoding="utf-8")
    # a dim scratch (grey 110 = 0.43, under the image threshold 0.5) over a normal frame
    scratched = cv2.line(frames[0].copy(), (5, 40), (60, 44), 110, 2)
    results = Detector(folder, threads=1).score_frames(
        [cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) for f in (frames[0], scratched)]
    )
    assert [r.score < 0.5 for r in results] == [True, True]
    assert [r.anomalous for r in results] == [False, True]
    (region,) = results[1].regions
    x, y, w, h = region.box
    assert x <= 5 and x + w >= 60 and y <= 40 and y + h >= 45
