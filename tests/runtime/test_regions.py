"""Pixel-level decisions: regions of the heatmap above the card's pixel threshold.

A region larger than the minimum area makes a frame anomalous even when its image score is
under the threshold (a thin defect watered down by the image score); a card without a pixel
threshold (older exports) makes no pixel decisions. The bundle is the real tile bundle of
tests/bundles.py, whose heatmap is the frame itself (grey, in [0, 1]), so every region's
area and box is known.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from bundles import pixel_frame_bundle

from adedge.bundle import CARD_NAME, load_bundle
from adedge.card import PixelThreshold
from adedge.errors import AdedgeError
from adedge.runtime.detector import Detector, FrameScore
from adedge.runtime.records import frame_record
from adedge.runtime.regions import find_regions, largest_region, pixel_rule
from adedge.runtime.sources import Frame

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed

SIDE = 64
BLOB = (20, 12, 10, 8)  # x, y, w, h of the dim blob: 80 px at grey 102 (0.4 < image thr 0.5)


def blob_frame(grey: int = 102) -> np.ndarray:
    """A black BGR frame with one dim rectangle at BLOB."""
    image = np.zeros((SIDE, SIDE), np.uint8)
    x, y, w, h = BLOB
    image[y : y + h, x : x + w] = grey
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)


def with_pixel(folder: Path, pixel: PixelThreshold | None) -> Path:
    """The bundle's card with ``threshold.pixel`` set (None: removed)."""
    card = load_bundle(folder).card
    card = dataclasses.replace(card, threshold=dataclasses.replace(card.threshold, pixel=pixel))
    (folder / CARD_NAME).write_text(json.dumps(card.to_dict()), encoding="utf-8")
    return folder


@pytest.fixture
def frame_bundle(tmp_path: Path) -> Path:
    """Whole-frame tile bundle, 64 px grey input: score = brightest pixel, amap = the frame;
    image threshold 0.5, pixel threshold 0.3 with min area 20 px of a 64 x 64 frame."""
    return pixel_frame_bundle(tmp_path / "b", SIDE)


# --- regions of a hand-made heatmap ------------------------------------------------------------


def test_one_blob_above_the_threshold_is_one_region_of_its_area_and_box():
    amap = np.zeros((60, 80), np.float32)
    amap[10:20, 20:35] = 1.0  # 10 x 15 = 150 px
    amap[50, 70] = 1.0  # one hot pixel: below the minimum area
    amap[40:44, 5:9] = 0.2  # under the threshold
    regions = find_regions(amap, 0.5, min_area=5)
    assert [(r.area, r.box) for r in regions] == [(150, (20, 10, 15, 10))]
    points = regions[0].contour.reshape(-1, 2)  # OUTLINE_GAP (2) pixels outside the region
    assert points[:, 0].min() == 18 and points[:, 0].max() == 36
    assert points[:, 1].min() == 8 and points[:, 1].max() == 21
    assert regions[0].to_dict() == {"area": 150, "box": [20, 10, 15, 10]}
    assert largest_region(amap, 0.5) == 150


def test_regions_are_strictly_larger_than_the_minimum_area_largest_first():
    amap = np.zeros((40, 40), np.float32)
    amap[0:3, 0:3] = 1.0  # 9 px
    amap[20:24, 20:24] = 1.0  # 16 px
    amap[30:32, 0:5] = 1.0  # 10 px
    assert [r.area for r in find_regions(amap, 0.5, min_area=9)] == [16, 10]
    assert [r.area for r in find_regions(amap, 0.5, min_area=8.5)] == [16, 10, 9]
    assert [r.area for r in find_regions(amap, 0.5, min_area=0, limit=2)] == [16, 10]


def test_a_heatmap_of_nan_or_under_the_threshold_has_no_region():
    assert find_regions(np.full((8, 8), np.nan, np.float32), 0.0, 0) == []
    assert find_regions(np.zeros((8, 8), np.float32), 0.0, 0) == []
    assert largest_region(np.zeros((8, 8), np.float32), 0.0) == 0


# --- the detector's decision ----------------------------------------------------------------


def test_a_frame_under_the_image_threshold_with_a_large_region_is_anomalous(frame_bundle):
    detector = Detector(frame_bundle, threads=1)
    (result,) = detector.score_frames([blob_frame()])
    assert result.score == pytest.approx(0.4, abs=0.003)  # 102 / 255: under 0.5
    assert result.score < detector.threshold
    assert result.anomalous
    assert [(r.area, r.box) for r in result.regions] == [(80, BLOB)]


def test_a_normal_frame_has_no_region_and_is_normal(frame_bundle):
    (result,) = Detector(frame_bundle, threads=1).score_frames([blob_frame(grey=60)])
    assert result.regions == [] and not result.anomalous  # 60 / 255 = 0.24 < 0.3


def test_min_area_override_and_turning_pixel_decisions_off(frame_bundle):
    (larger,) = Detector(frame_bundle, threads=1, min_area=80).score_frames([blob_frame()])
    assert larger.regions == [] and not larger.anomalous  # 80 px is not larger than 80
    (smaller,) = Detector(frame_bundle, threads=1, min_area=79).score_frames([blob_frame()])
    assert smaller.anomalous and smaller.regions[0].area == 80
    (off,) = Detector(frame_bundle, threads=1, pixel=False).score_frames([blob_frame()])
    assert off.regions is None and not off.anomalous and off.amap is not None


def test_the_cards_min_area_scales_with_the_frames_area(frame_bundle):
    # 20 px of a 32 x 32 frame is 80 px of a 64 x 64 one: the 80 px blob is not larger
    with_pixel(frame_bundle, PixelThreshold(0.3, 99.9, 20, (32, 32)))
    detector = Detector(frame_bundle, threads=1)
    assert detector.pixel is not None and detector.pixel.min_area_for((SIDE, SIDE)) == 80
    (result,) = detector.score_frames([blob_frame()])
    assert result.regions == [] and not result.anomalous


def test_an_old_card_makes_no_pixel_decisions(frame_bundle):
    with_pixel(frame_bundle, None)
    raw = json.loads((frame_bundle / CARD_NAME).read_text(encoding="utf-8"))
    assert "pixel" not in raw["threshold"]  # written as before: older adedges read it alike
    detector = Detector(frame_bundle, threads=1)
    assert detector.pixel is None
    (result,) = detector.score_frames([blob_frame()])
    assert result.regions is None and not result.anomalous
    with pytest.raises(AdedgeError, match="--min-area needs a model"):
        Detector(frame_bundle, threads=1, min_area=10)


def test_min_area_override_must_be_a_pixel_count():
    pixel = PixelThreshold(0.3, 99.9, 20, (SIDE, SIDE))
    for bad in (-1, math.nan, math.inf):
        with pytest.raises(AdedgeError, match="--min-area must be"):
            pixel_rule(pixel, bad)
    assert pixel_rule(pixel, 0).min_area_for((1, 1)) == 0
    assert pixel_rule(pixel, 5, enabled=False) is None


def test_the_frame_record_carries_the_regions(frame_bundle):
    (result,) = Detector(frame_bundle, threads=1).score_frames([blob_frame()])
    frame = Frame(3, 0.1, blob_frame(), "f3")
    record = frame_record(frame, result, 0.5)
    assert record["regions"] == [{"area": 80, "box": list(BLOB)}]
    assert "regions" not in frame_record(frame, FrameScore(0.1, False), 0.5)
    json.dumps(record)


# --- adedge stream ---------------------------------------------------------------------------


def test_stream_decides_on_regions_and_records_them(frame_bundle, tmp_path, monkeypatch, capsys):
    from cli_helpers import run_cli
    from jsonl_records import frame_records, records_of

    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), blob_frame(grey=60))  # 0.24: under both thresholds
    cv2.imwrite(str(folder / "1.png"), blob_frame())  # 0.4: a region of 80 px above 0.3
    runs = {"card": [], "--min-area": ["--min-area", "80"], "--no-pixel": ["--no-pixel"]}
    labels = {}
    for name, extra in runs.items():
        out = tmp_path / f"{name.strip('-')}.jsonl"
        args = ["stream", "--source", folder, "--model", frame_bundle, "--jsonl", out, *extra]
        code, printed, err = run_cli(monkeypatch, capsys, *args, "--quiet", "--threads", "1")
        assert code == 0
        frames = frame_records(out)
        labels[name] = [record["anomalous"] for record in frames]
        start = records_of(out, "start")[0]
        if name == "--no-pixel":
            assert all("regions" not in record for record in frames)
            assert "pixel_threshold" not in start
        else:
            assert start["pixel_threshold"] == pytest.approx(0.3)
            assert "regions larger than" in err
            with_regions = "1 with a region above the pixel threshold"
            assert (with_regions in printed) == (name == "card")
    assert labels == {
        "card": [False, True],
        "--min-area": [False, False],
        "--no-pixel": [False] * 2,
    }
    card_frames = frame_records(tmp_path / "card.jsonl")
    assert [record["regions"] for record in card_frames] == [
        [],
        [{"area": 80, "box": list(BLOB)}],
    ]


# --- drawing -----------------------------------------------------------------------------------


def test_regions_are_outlined_and_the_frame_is_not_washed(frame_bundle):
    from adedge.runtime.sinks.annotate import YELLOW, annotate

    image = cv2.cvtColor(np.full((SIDE * 4, SIDE * 4), 90, np.uint8), cv2.COLOR_GRAY2BGR)
    image[100:140, 60:130] = 200  # the defect: 40 x 70 px
    amap = (image[..., 0] / 255.0).astype(np.float32)
    regions = find_regions(amap, 0.5, 100)
    result = FrameScore(0.2, True, amap=amap, regions=regions)
    drawn = annotate(image, 7, result, 0.5)
    yellow = np.all(drawn == YELLOW, axis=2)
    ys, xs = np.nonzero(yellow[60:, :])  # below the text bar: the outline (and its label)
    assert ys.size and xs.min() >= 55 and xs.max() <= 135 and ys.min() + 60 >= 85
    inside, outside = drawn[110:130, 70:120], drawn[180:230, 150:230]
    assert (inside == 200).all() and (outside == 90).all()  # no colour wash anywhere
    washed = annotate(image, 7, FrameScore(0.2, True, amap=amap), 0.5)  # no pixel decisions
    assert not (washed[180:230, 150:230] == 90).all()  # the heatmap overlay, as before
