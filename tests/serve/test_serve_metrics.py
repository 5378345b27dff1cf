"""The service's Prometheus metrics, read back through prometheus-client's own text parser
(as Prometheus would scrape them): the names are pinned, the values follow the calls."""

from __future__ import annotations

import math
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adedge.runtime.serve.metrics import METRIC_NAMES, ServiceMetrics
from adedge.runtime.serve.score_histograms import score_bucket_edges
from adedge.runtime.serve.stats import CameraState, DropReason

pytestmark = pytest.mark.runtime

# Literal on purpose: renaming a metric breaks dashboards and alerts, so it must break this.
PINNED_NAMES = (
    "adedge_build_info",
    "adedge_camera_up",
    "adedge_camera_state",
    "adedge_camera_reconnects_total",
    "adedge_camera_frames_read_total",
    "adedge_camera_frames_scored_total",
    "adedge_camera_input_fps",
    "adedge_camera_scored_fps",
    "adedge_camera_dropped_frames_total",
    "adedge_camera_score",
    "adedge_camera_threshold",
    "adedge_camera_score_distribution",
    "adedge_camera_latency_seconds",
    "adedge_camera_alarm",
    "adedge_events_total",
    "adedge_model_up",
    "adedge_model_inference_seconds",
    "adedge_model_batch_rows",
    "adedge_model_queue_depth",
    "adedge_model_swaps_total",
    "adedge_storage_media_bytes",
    "adedge_storage_free_bytes",
    "adedge_outbox_messages",
)


def scrape(metrics: ServiceMetrics) -> dict[str, list]:
    """Family name as exposed (counters with ``_total``) -> its samples."""
    families = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        name = family.name + "_total" if family.type == "counter" else family.name
        families[name] = family.samples
    return families


def value(metrics: ServiceMetrics, sample_name: str, **labels: str) -> float:
    """The one sample of that name whose labels include ``labels``."""
    found = [
        sample.value
        for samples in scrape(metrics).values()
        for sample in samples
        if sample.name == sample_name
        and all(sample.labels.get(key) == wanted for key, wanted in labels.items())
    ]
    assert len(found) == 1, (sample_name, labels, found)
    return found[0]


@pytest.fixture
def metrics() -> ServiceMetrics:
    service = ServiceMetrics()
    service.camera_added("line1", "bottle")
    service.camera_added("line2", "bottle", threshold=1.0)
    return service


def test_every_pinned_name_is_exposed_and_nothing_else(metrics: ServiceMetrics) -> None:
    metrics.storage(10, 20, {"mqtt": 0})
    assert METRIC_NAMES == PINNED_NAMES
    exposed = {name for name in scrape(metrics) if not name.endswith("_created")}
    assert {name for name in exposed if name.startswith("adedge_")} == set(PINNED_NAMES)
    assert all(name.startswith(("adedge_", "process_")) for name in exposed), exposed


def test_a_camera_shows_at_zero_before_its_first_frame(metrics: ServiceMetrics) -> None:
    assert value(metrics, "adedge_camera_frames_read_total", camera="line1") == 0
    assert value(metrics, "adedge_camera_up", camera="line1", model="bottle") == 0
    assert value(metrics, "adedge_camera_state", camera="line1", state="starting") == 1
    for reason in DropReason:
        dropped = value(
            metrics, "adedge_camera_dropped_frames_total", camera="line1", reason=reason.value
        )
        assert dropped == 0
    assert math.isnan(value(metrics, "adedge_camera_score", camera="line1"))
    assert value(metrics, "adedge_model_up", model="bottle") == 0
    for outcome in ("swapped", "refused"):
        assert value(metrics, "adedge_model_swaps_total", model="bottle", outcome=outcome) == 0
    assert value(metrics, "adedge_build_info") == 1


def test_values_follow_the_calls(metrics: ServiceMetrics) -> None:
    for _ in range(5):
        metrics.frame_read("line1")
    metrics.frame_read("line2")
    metrics.dropped("line1", DropReason.STALE, 2)
    metrics.dropped("line1", DropReason.BUSY)
    metrics.frame_scored("line1", 0.7, 0.02)
    metrics.frame_scored("line1", 0.9, 0.3)
    metrics.camera_state("line1", CameraState.ONLINE)
    metrics.camera_state("line2", CameraState.OFFLINE)
    metrics.reconnect("line2")
    metrics.rates("line1", 25.0, 12.5)
    metrics.alarm("line1", True)
    metrics.event("line1")
    metrics.batch("bottle", 8, 0.004)
    metrics.batch("bottle", 3, 0.2)
    metrics.queue_depth("bottle", 4)
    metrics.model_up("bottle", True)

    assert value(metrics, "adedge_camera_frames_read_total", camera="line1") == 5
    assert value(metrics, "adedge_camera_frames_read_total", camera="line2") == 1
    stale = {"camera": "line1", "reason": "stale"}
    assert value(metrics, "adedge_camera_dropped_frames_total", **stale) == 2
    assert value(metrics, "adedge_camera_dropped_frames_total", camera="line1", reason="busy") == 1
    assert value(metrics, "adedge_camera_dropped_frames_total", camera="line2", reason="busy") == 0
    assert value(metrics, "adedge_camera_frames_scored_total", camera="line1") == 2
    assert value(metrics, "adedge_camera_score", camera="line1") == pytest.approx(0.9)
    assert value(metrics, "adedge_camera_latency_seconds_count", camera="line1") == 2
    assert value(metrics, "adedge_camera_latency_seconds_bucket", camera="line1", le="0.025") == 1
    assert value(metrics, "adedge_camera_latency_seconds_sum", camera="line1") == pytest.approx(
        0.32
    )
    assert value(metrics, "adedge_camera_up", camera="line1") == 1
    assert value(metrics, "adedge_camera_up", camera="line2") == 0
    assert value(metrics, "adedge_camera_state", camera="line2", state="offline") == 1
    assert value(metrics, "adedge_camera_state", camera="line2", state="starting") == 0
    assert value(metrics, "adedge_camera_reconnects_total", camera="line2") == 1
    assert value(metrics, "adedge_camera_input_fps", camera="line1") == 25.0
    assert value(metrics, "adedge_camera_scored_fps", camera="line1") == 12.5
    assert value(metrics, "adedge_camera_alarm", camera="line1") == 1
    assert value(metrics, "adedge_camera_alarm", camera="line2") == 0
    assert value(metrics, "adedge_events_total", camera="line1") == 1
    assert value(metrics, "adedge_model_inference_seconds_count", model="bottle") == 2
    assert value(metrics, "adedge_model_inference_seconds_bucket", model="bottle", le="0.005") == 1
    assert value(metrics, "adedge_model_batch_rows_sum", model="bottle") == 11
    assert value(metrics, "adedge_model_batch_rows_bucket", model="bottle", le="4.0") == 1
    assert value(metrics, "adedge_model_queue_depth", model="bottle") == 4
    assert value(metrics, "adedge_model_up", model="bottle") == 1
    metrics.alarm("line1", False)
    metrics.model_up("bottle", False)
    assert value(metrics, "adedge_camera_alarm", camera="line1") == 0
    assert value(metrics, "adedge_model_up", model="bottle") == 0


def test_storage_gauges_and_an_emptied_outbox_channel_reads_zero(metrics: ServiceMetrics) -> None:
    metrics.storage(1_000, 5_000_000, {"mqtt": 3, "webhook:ops": 1})
    assert value(metrics, "adedge_storage_media_bytes") == 1_000
    assert value(metrics, "adedge_storage_free_bytes") == 5_000_000
    assert value(metrics, "adedge_outbox_messages", channel="mqtt") == 3
    metrics.storage(2_000, 4_000_000, {"mqtt": 0})
    assert value(metrics, "adedge_outbox_messages", channel="webhook:ops") == 0
    assert value(metrics, "adedge_storage_media_bytes") == 2_000


def test_score_buckets_sit_around_the_camera_threshold(metrics: ServiceMetrics) -> None:
    assert score_bucket_edges(1.0)[5] == 1.0
    for threshold in (1.0, 0.37, 0.0, -2.0, 250.0):
        edges = score_bucket_edges(threshold)
        assert list(edges) == sorted(set(edges)) and threshold in edges
    for score in (0.5, 1.0, 1.05, 10.0):
        metrics.frame_scored("line2", score, 0.01)
    # le is inclusive: a score equal to the threshold is normal (the detector alarms on >)
    assert value(metrics, "adedge_camera_score_distribution_bucket", camera="line2", le="1.0") == 2
    assert value(metrics, "adedge_camera_score_distribution_bucket", camera="line2", le="1.1") == 3
    assert value(metrics, "adedge_camera_score_distribution_bucket", camera="line2", le="+Inf") == 4
    assert value(metrics, "adedge_camera_threshold", camera="line2") == 1.0

    metrics.threshold("line2", 2.0)  # new edges, counts restart
    metrics.frame_scored("line2", 1.5, 0.01)
    assert value(metrics, "adedge_camera_score_distribution_bucket", camera="line2", le="2.0") == 1
    assert value(metrics, "adedge_camera_score_distribution_bucket", camera="line2", le="+Inf") == 1
    # line1 has no threshold yet: its scores count in +Inf alone
    metrics.frame_scored("line1", 0.3, 0.01)
    buckets = [
        s
        for s in scrape(metrics)["adedge_camera_score_distribution"]
        if s.labels["camera"] == "line1" and s.name.endswith("_bucket")
    ]
    assert [(s.labels["le"], s.value) for s in buckets] == [("+Inf", 1.0)]


def test_a_removed_camera_leaves_no_series_and_an_unknown_one_is_a_wiring_bug(
    metrics: ServiceMetrics,
) -> None:
    metrics.camera_removed("line1")
    for samples in scrape(metrics).values():
        assert all(s.labels.get("camera") != "line1" for s in samples)
    with pytest.raises(KeyError, match="camera_added"):
        metrics.frame_read("line1")


def test_concurrent_updates_lose_nothing(metrics: ServiceMetrics) -> None:
    threads, calls = 8, 2_000
    start = threading.Barrier(threads)

    def work(index: int) -> None:
        camera = "line1" if index % 2 else "line2"
        start.wait()
        for i in range(calls):
            metrics.frame_read(camera)
            metrics.frame_scored(camera, 0.5 + (i % 3), 0.01)
            metrics.batch("bottle", 1, 0.001)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    per_camera = threads // 2 * calls
    for camera in ("line1", "line2"):
        assert value(metrics, "adedge_camera_frames_read_total", camera=camera) == per_camera
        assert value(metrics, "adedge_camera_frames_scored_total", camera=camera) == per_camera
        assert value(metrics, "adedge_camera_latency_seconds_count", camera=camera) == per_camera
        inf = {"camera": camera, "le": "+Inf"}
        assert value(metrics, "adedge_camera_score_distribution_bucket", **inf) == per_camera
    assert value(metrics, "adedge_model_batch_rows_count", model="bottle") == threads * calls
