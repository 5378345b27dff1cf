"""The service's Prometheus metrics, on a registry of its own (not the process-global one,
so two services in one process, or a test, never see each other's series).

Camera and engine threads call :class:`ServiceMetrics` on every frame and batch, so each
call is a dict lookup and an update of a prometheus-client child (which locks itself):
the label children are made once, in :meth:`ServiceMetrics.camera_added`, so every camera
shows in ``/metrics`` at 0 from the start rather than appearing with its first frame.

Names start ``adedge_`` (counters ``_total``, durations ``_seconds``; base units) and are
pinned in :data:`METRIC_NAMES`. Every per-camera series has the labels ``camera`` and
``model``, so a dashboard filters by either. Choices worth knowing:

- ``adedge_camera_state{state}`` is the enum pattern of kube-state-metrics: one series per
  :class:`~adedge.runtime.serve.stats.CameraState`, 1 for the current state, 0 for the rest
  (``sum by (state) (adedge_camera_state)`` counts cameras per state).
- ``adedge_camera_score_distribution`` is a histogram of raw scores whose bucket edges are
  placed around each camera's threshold (``score_histograms.py``): scores are in each
  model's own units, so fixed edges would suit one model and be blind for the next. A
  Prometheus histogram's ``le`` is a label, so edges may differ per series; prometheus-client
  only lacks a class for it, hence :class:`~.score_histograms.ScoreHistograms`. Drift shows
  as mass moving towards the ``le`` equal to ``adedge_camera_threshold``. Changing a
  camera's threshold moves its edges and restarts its counts (series with the new ``le``
  values; the old ones go stale, so compare rates within one threshold).
  Until the threshold is known every score counts in ``+Inf`` alone. Where an edge is
  negative (a threshold of 0 or below) prometheus-client leaves out ``_sum`` and ``_count``
  as OpenMetrics asks; the ``+Inf`` bucket is the count.
- counters and histograms also expose prometheus-client's ``*_created`` gauges (its
  default; turning them off is process-global, which a library must not do), and the
  registry carries the standard ``process_*`` series (RSS, CPU, open fds) on Linux.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from adedge import __version__
from adedge.runtime.serve.score_histograms import (
    CAMERA_LABELS,
    ScoreHistogram,
    ScoreHistograms,
    score_bucket_edges,
)
from adedge.runtime.serve.stats import CameraState, DropReason

METRIC_NAMES = (
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
"""Every family this module exposes, as written in the exposition's ``# TYPE`` lines."""

MetricKind = TypeVar("MetricKind", Gauge, Counter, Histogram)
# read -> scored: a frame waits at most max_delay_ms for its batch, then the batch runs
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INFERENCE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# a batch is frames x tiles across cameras, so rows reach the hundreds for tiled models
BATCH_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class _CameraSeries:
    """One camera's label children, made once so a frame's update is an attribute read."""

    model: str
    up: Gauge
    states: dict[CameraState, Gauge]
    reconnects: Counter
    frames_read: Counter
    frames_scored: Counter
    input_fps: Gauge
    scored_fps: Gauge
    dropped: dict[DropReason, Counter]
    score: Gauge
    threshold: Gauge
    scores: ScoreHistogram
    latency: Histogram
    alarm: Gauge
    events: Counter


@dataclass
class _ModelSeries:
    up: Gauge
    inference: Histogram
    batch_rows: Histogram
    queue_depth: Gauge


class ServiceMetrics:
    """The service's metrics; every method is thread-safe and cheap enough per frame.

    A camera method called for a camera never passed to :meth:`camera_added` raises
    KeyError (a wiring bug); model methods make a model's series on first use.
    """

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self._lock = threading.Lock()  # guards the dicts below, not the updates
        self._cameras: dict[str, _CameraSeries] = {}
        self._models: dict[str, _ModelSeries] = {}
        self._outbox_channels: set[str] = set()

        def per_camera(kind: type[MetricKind], name: str, doc: str, *extra: str) -> MetricKind:
            return kind(name, doc, (*CAMERA_LABELS, *extra), registry=r)

        def per_model(kind: type[MetricKind], name: str, doc: str, **options: Any) -> MetricKind:
            return kind(name, doc, ("model",), registry=r, **options)

        Info("adedge_build", "The adedge version serving.", registry=r).info(
            {"version": __version__}
        )
        self._up = per_camera(Gauge, "adedge_camera_up", "1: the camera is online.")
        self._state = per_camera(Gauge, "adedge_camera_state", "1 for its state.", "state")
        self._reconnects = per_camera(
            Counter, "adedge_camera_reconnects", "Times the source was reopened."
        )
        self._frames_read = per_camera(
            Counter, "adedge_camera_frames_read", "Frames read from the source."
        )
        self._frames_scored = per_camera(
            Counter, "adedge_camera_frames_scored", "Frames scored by the model."
        )
        self._input_fps = per_camera(Gauge, "adedge_camera_input_fps", "Frames read per second.")
        self._scored_fps = per_camera(
            Gauge, "adedge_camera_scored_fps", "Frames scored per second."
        )
        self._dropped = per_camera(
            Counter, "adedge_camera_dropped_frames", "Frames read, not scored.", "reason"
        )
        self._score = per_camera(Gauge, "adedge_camera_score", "The latest frame's score.")
        self._threshold = per_camera(
            Gauge, "adedge_camera_threshold", "The threshold scores are compared with."
        )
        self._scores = ScoreHistograms()
        r.register(self._scores)
        self._latency = Histogram(
            "adedge_camera_latency_seconds",
            "From a frame read to its score.",
            CAMERA_LABELS,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self._alarm = per_camera(Gauge, "adedge_camera_alarm", "1: the alarm is on.")
        self._events = per_camera(Counter, "adedge_events", "Events opened.")
        self._model_up = per_model(Gauge, "adedge_model_up", "1: the model is loaded.")
        self._inference = per_model(
            Histogram, "adedge_model_inference_seconds", "Per batch.", buckets=INFERENCE_BUCKETS_S
        )
        self._batch_rows = per_model(
            Histogram, "adedge_model_batch_rows", "Rows per batch.", buckets=BATCH_ROW_BUCKETS
        )
        self._queue_depth = per_model(
            Gauge, "adedge_model_queue_depth", "Frames waiting for the engine."
        )
        self._swaps = Counter(
            "adedge_model_swaps",
            "Model swaps tried (outcome: swapped, or refused by the checks).",
            ("model", "outcome"),
            registry=r,
        )
        self._media_bytes = Gauge(
            "adedge_storage_media_bytes", "Bytes of evidence kept.", registry=r
        )
        self._free_bytes = Gauge("adedge_storage_free_bytes", "Bytes free on its disk.", registry=r)
        self._outbox = Gauge(
            "adedge_outbox_messages", "Messages waiting for delivery.", ("channel",), registry=r
        )
        ProcessCollector(registry=r)

    # --- cameras -------------------------------------------------------------------------

    def camera_added(self, camera: str, model: str, threshold: float | None = None) -> None:
        """Make the camera's series at 0 (state ``starting``); ``threshold`` places its score
        buckets (else :meth:`threshold` does, once the model's card is read)."""
        self.camera_removed(camera)
        key = (camera, model)
        series = _CameraSeries(
            model=model,
            up=self._up.labels(*key),
            states={state: self._state.labels(*key, state.value) for state in CameraState},
            reconnects=self._reconnects.labels(*key),
            frames_read=self._frames_read.labels(*key),
            frames_scored=self._frames_scored.labels(*key),
            input_fps=self._input_fps.labels(*key),
            scored_fps=self._scored_fps.labels(*key),
            dropped={reason: self._dropped.labels(*key, reason.value) for reason in DropReason},
            score=self._score.labels(*key),
            threshold=self._threshold.labels(*key),
            scores=self._scores.add(*key),
            latency=self._latency.labels(*key),
            alarm=self._alarm.labels(*key),
            events=self._events.labels(*key),
        )
        series.score.set(math.nan)  # no score yet; 0 would read as a real one
        series.threshold.set(math.nan)
        with self._lock:
            self._cameras[camera] = series
        self._model(model)
        self.camera_state(camera, CameraState.STARTING)
        if threshold is not None:
            self.threshold(camera, threshold)

    def camera_removed(self, camera: str) -> None:
        """Drop the camera's series (a camera taken out of a running service)."""
        with self._lock:
            series = self._cameras.pop(camera, None)
        if series is None:
            return
        key = (camera, series.model)
        for metric in (self._up, self._reconnects, self._frames_read, self._frames_scored):
            metric.remove(*key)
        for metric in (self._input_fps, self._scored_fps, self._score, self._threshold):
            metric.remove(*key)
        for metric in (self._latency, self._alarm, self._events):
            metric.remove(*key)
        for state in CameraState:
            self._state.remove(*key, state.value)
        for reason in DropReason:
            self._dropped.remove(*key, reason.value)
        self._scores.remove(*key)

    def _camera(self, camera: str) -> _CameraSeries:
        try:
            return self._cameras[camera]
        except KeyError:
            raise KeyError(f"camera {camera!r} has no metrics: call camera_added first") from None

    def frame_read(self, camera: str) -> None:
        self._camera(camera).frames_read.inc()

    def frame_scored(self, camera: str, score: float, latency_s: float) -> None:
        series = self._camera(camera)
        series.frames_scored.inc()
        series.score.set(score)
        series.latency.observe(latency_s)
        if math.isfinite(score):
            series.scores.observe(score)

    def dropped(self, camera: str, reason: DropReason, count: int = 1) -> None:
        self._camera(camera).dropped[DropReason(reason)].inc(count)

    def reconnect(self, camera: str) -> None:
        self._camera(camera).reconnects.inc()

    def camera_state(self, camera: str, state: CameraState) -> None:
        series = self._camera(camera)
        state = CameraState(state)
        for other, gauge in series.states.items():
            gauge.set(1 if other is state else 0)
        series.up.set(1 if state is CameraState.ONLINE else 0)

    def threshold(self, camera: str, value: float) -> None:
        """The camera's threshold now: its score buckets move here and their counts restart."""
        series = self._camera(camera)
        series.threshold.set(value)
        series.scores.reset(score_bucket_edges(value))

    def rates(self, camera: str, input_fps: float, scored_fps: float) -> None:
        series = self._camera(camera)
        series.input_fps.set(input_fps)
        series.scored_fps.set(scored_fps)

    def alarm(self, camera: str, on: bool) -> None:
        self._camera(camera).alarm.set(1 if on else 0)

    def event(self, camera: str) -> None:
        self._camera(camera).events.inc()

    # --- models --------------------------------------------------------------------------

    def _model(self, model: str) -> _ModelSeries:
        series = self._models.get(model)
        if series is None:
            with self._lock:
                series = self._models.get(model)
                if series is None:
                    series = _ModelSeries(
                        up=self._model_up.labels(model),
                        inference=self._inference.labels(model),
                        batch_rows=self._batch_rows.labels(model),
                        queue_depth=self._queue_depth.labels(model),
                    )
                    self._models[model] = series
                    for outcome in ("swapped", "refused"):  # at 0 from the start
                        self._swaps.labels(model, outcome)
        return series

    def batch(self, model: str, rows: int, seconds: float) -> None:
        series = self._model(model)
        series.inference.observe(seconds)
        series.batch_rows.observe(rows)

    def queue_depth(self, model: str, depth: int) -> None:
        self._model(model).queue_depth.set(depth)

    def model_up(self, model: str, up: bool) -> None:
        self._model(model).up.set(1 if up else 0)

    def model_swap(self, model: str, swapped: bool) -> None:
        self._swaps.labels(model, "swapped" if swapped else "refused").inc()

    # --- storage and output --------------------------------------------------------------

    def storage(self, media_bytes: int, free_bytes: int, outbox: dict[str, int]) -> None:
        """Storage gauges now; a channel missing from ``outbox`` reads 0 (not stale)."""
        self._media_bytes.set(media_bytes)
        self._free_bytes.set(free_bytes)
        with self._lock:
            gone = self._outbox_channels - set(outbox)
            self._outbox_channels |= set(outbox)
        for channel in gone:
            self._outbox.labels(channel).set(0)
        for channel, waiting in outbox.items():
            self._outbox.labels(channel).set(waiting)

    def exposition(self) -> bytes:
        """The Prometheus text format of every series."""
        return generate_latest(self.registry)
