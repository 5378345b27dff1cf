"""Events report their peak frame's regions above the pixel threshold (area, box), and the
snapshot outlines them on the unpainted frame. A real EventRecorder, Hub and EventStore in a
temporary folder; the regions come from the runtime's own find_regions on a known heatmap."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from adedge.runtime.regions import find_regions
from adedge.runtime.serve.config import parse_config
from adedge.runtime.serve.event_types import Box, Event, EventRegion, ModelRef, ThresholdSource
from adedge.runtime.serve.evidence import PeakFrame, draw_snapshot
from adedge.runtime.serve.hub import Hub
from adedge.runtime.serve.metrics import ServiceMetrics
from adedge.runtime.serve.recorder import EventRecorder
from adedge.runtime.serve.store import EventStore
from adedge.runtime.sinks.annotate import YELLOW

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed

MODEL = ModelRef("tex", "0" * 64, "onnxruntime")


def defect() -> tuple[np.ndarray, np.ndarray]:
    """A grey 120 x 160 BGR frame with a bright 20 x 30 patch at (x 40, y 50), and its map."""
    image = np.full((120, 160, 3), 80, np.uint8)
    image[50:70, 40:70] = 220
    return image, (image[..., 0] / 255.0).astype(np.float32)


def recorder(tmp_path: Path) -> EventRecorder:
    config = parse_config(
        {
            "node": {"id": "n"},
            "models": {"tex": {"bundle": str(tmp_path)}},
            "cameras": {"c": {"source": "synthetic", "model": "tex", "alarm": {"k": 1, "n": 1}}},
            "api": {"enabled": False},
            "storage": {"path": str(tmp_path / "store")},
        }
    )
    store = EventStore(tmp_path / "store", [], 1 << 30)
    metrics = ServiceMetrics()
    metrics.camera_added("c", "tex", 0.5)
    return EventRecorder("c", config.cameras["c"], "n", {}, Hub(store, metrics, print))


def test_an_event_reports_its_peak_frames_regions(tmp_path):
    rec = recorder(tmp_path)
    image, amap = defect()
    regions = find_regions(amap, 0.5, 50)
    rec.observe(1.0, image, 0.9, amap, 0.5, ThresholdSource.CARD, MODEL, regions=regions)
    event = rec.event
    assert event is not None
    assert event.regions == [EventRegion(600, Box(40, 50, 30, 20))]
    data = event.to_dict()
    assert data["regions"] == [{"area": 600, "box": {"x": 40, "y": 50, "width": 30, "height": 20}}]
    assert Event.from_dict(data).regions == event.regions
    assert rec.hub.store.get(event.id).regions == event.regions  # committed with the event


def test_without_pixel_decisions_an_event_has_no_regions(tmp_path):
    rec = recorder(tmp_path)
    image, amap = defect()
    rec.observe(1.0, image, 0.9, amap, 0.5, ThresholdSource.CARD, MODEL)
    assert rec.event is not None and rec.event.regions is None
    assert "regions" in rec.event.to_dict() and rec.event.to_dict()["regions"] is None
    old = rec.event.to_dict()
    del old["regions"]  # an event stored before pixel decisions
    assert Event.from_dict(old).regions is None


def test_the_snapshot_outlines_the_regions_without_a_heatmap(tmp_path):
    image, amap = defect()
    regions = find_regions(amap, 0.5, 50)
    peak = PeakFrame("c", 1.0, image, amap, Box(40, 50, 30, 20), 0.9, 0.5, regions)
    drawn = draw_snapshot(peak)
    assert np.all(drawn == YELLOW, axis=2)[45:75, 35:75].any()  # the outline
    assert (drawn[90:115, 100:150] == 80).all()  # the frame unpainted away from it
    assert (drawn[55:65, 45:65] == 220).all()  # and inside it
    washed = draw_snapshot(PeakFrame("c", 1.0, image, amap, None, 0.9, 0.5))
    assert not (washed[90:115, 100:150] == 80).all()  # without regions: the heatmap, as before
    cv2.imencode(".jpg", drawn)


def test_a_region_alone_opens_and_holds_an_event(tmp_path):
    """A frame under the image threshold with a region larger than the minimum area is
    anomalous: it opens the event (k=1) and holds it; frames without one let it end."""
    rec = recorder(tmp_path)
    image, amap = defect()
    regions = find_regions(amap, 0.5, 50)
    assert regions
    rec.observe(1.0, image, 0.1, amap, 0.5, ThresholdSource.CARD, MODEL, regions=regions)
    assert rec.event is not None and rec.alarm
    rec.observe(10.0, image, 0.1, amap, 0.5, ThresholdSource.CARD, MODEL, regions=regions)
    assert rec.event is not None  # still a region: not released by the low score
    quiet = np.full_like(image, 80)
    flat = (quiet[..., 0] / 255.0).astype(np.float32)
    for wall in (11.0, 20.0):  # no region and a low score, past the cooldown
        rec.observe(wall, quiet, 0.1, flat, 0.5, ThresholdSource.CARD, MODEL, regions=[])
    assert rec.event is None and not rec.alarm


def test_no_region_and_a_low_score_opens_nothing(tmp_path):
    rec = recorder(tmp_path)
    image, amap = defect()
    rec.observe(1.0, image, 0.1, amap, 0.5, ThresholdSource.CARD, MODEL, regions=[])
    rec.observe(2.0, image, 0.1, amap, 0.5, ThresholdSource.CARD, MODEL, regions=None)
    assert rec.event is None
