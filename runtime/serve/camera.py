"""One camera in the service: a thread that reads its source, hands frames to the model's
shared engine and turns the scores into events.

An unpaced file keeps two frames at the engine (one scored, one read ahead), so reading
and decoding overlap inference without a backlog; a live or fps-capped camera waits for
each score, so its latency is the engine's. A live source keeps only its newest
frame (the older ones count as ``stale`` drops); an ``fps`` cap drops the frames that come
too soon (``fps_cap``); with detection off frames are read and counted (``detect_off``).

A source that cannot be opened, or that ends while it should not (a live camera that gave
up, a file that fails), is reopened with exponential back-off (1 s doubling up to 30 s)
while the other cameras go on; the camera reports ``offline`` meanwhile. A file or folder
that simply ends is ``ended`` (``loop: true`` restarts it). A model that failed to load
puts the camera in ``error``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from adedge.errors import AdedgeError
from adedge.outputs import Existing
from adedge.runtime.records import GapEnded, GapStarted, Reconnect
from adedge.runtime.regions import Region
from adedge.runtime.serve.config import AlarmRule, CameraConfig
from adedge.runtime.serve.engine import Busy, Scored, SharedEngine
from adedge.runtime.serve.event_types import EndReason, ModelRef, ThresholdSource
from adedge.runtime.serve.evidence import apply_mask, mask_array
from adedge.runtime.serve.hub import Hub
from adedge.runtime.serve.live import LiveBuffer, Rate
from adedge.runtime.serve.recorder import EventRecorder
from adedge.runtime.serve.stats import CameraState, CameraStats, DropReason
from adedge.runtime.sinks import JsonlSink
from adedge.runtime.sources import Frame, FrameSource, LiveSource, conform_image, open_source

BACKOFF_S = 1.0
BACKOFF_CAP_S = 30.0
LATENCY_WINDOW = 512  # latency percentiles over this many frames
IN_FLIGHT = 2


@dataclass
class _Pending:
    frame: Frame
    future: Future[Scored]
    read_at: float  # monotonic


class Camera:
    """One camera's thread and its state (see the module docstring)."""

    def __init__(
        self,
        name: str,
        config: CameraConfig,
        engine: SharedEngine,
        hub: Hub,
        node: str,
        labels: dict[str, str],
        model: ModelRef,
    ) -> None:
        self.name, self.config, self.engine, self.hub, self.model = (
            name,
            config,
            engine,
            hub,
            model,
        )
        self.recorder = EventRecorder(name, config, node, labels, hub)
        self.detect = config.detect
        self.threshold_override: tuple[float, ThresholdSource] | None = (
            None if config.threshold is None else (config.threshold, ThresholdSource.CONFIG)
        )
        self.state = CameraState.STARTING if config.enabled else CameraState.DISABLED
        self.error: str | None = None
        self.frames_read = 0
        self.frames_scored = 0
        self.reconnects = 0
        self.drops: dict[DropReason, int] = {}
        self.latest_score: float | None = None
        self.produced = threading.Event()  # a first frame arrived (readiness)
        self.live = LiveBuffer()  # the newest scored frame and recent scores (the console)
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._input_rate, self._scored_rate = Rate(), Rate()
        self._masks: dict[tuple[int, int], np.ndarray | None] = {}
        self._last_submit = -float("inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._jsonl: JsonlSink | None = None
        self._lock = threading.Lock()

    # --- control ------------------------------------------------------------------------
    @property
    def threshold(self) -> tuple[float, ThresholdSource]:
        if self.threshold_override is not None:
            return self.threshold_override
        detector = self.engine.detector
        return (float("nan") if detector is None else detector.threshold, ThresholdSource.CARD)

    def set_threshold(self, value: float) -> None:
        """A threshold set at run time (MQTT ``threshold/set``): takes effect on the next
        frame and is reported back on ``threshold/state``."""
        self.threshold_override = (value, ThresholdSource.RUNTIME)
        self.hub.metrics.threshold(self.name, value)
        self.hub.report(self.name, "threshold", f"{value:g}")

    def clear_threshold(self) -> None:
        """Back to the config's threshold (or the card's)."""
        config = self.config.threshold
        self.threshold_override = None if config is None else (config, ThresholdSource.CONFIG)
        value = self.threshold[0]
        if value == value:
            self.hub.metrics.threshold(self.name, value)
        self.hub.report(self.name, "threshold", f"{value:g}")

    def set_detect(self, on: bool) -> None:
        self.detect = on
        self.hub.report(self.name, "detect", "on" if on else "off")

    def set_rule(self, rule: AlarmRule) -> None:
        self.recorder.lifecycle.set_rule(rule)

    def start(self) -> None:
        if not self.config.enabled:
            self.hub.status(self.name, CameraState.DISABLED)
            return
        if self.config.jsonl is not None:
            self._jsonl = JsonlSink(self.config.jsonl, existing=Existing.APPEND)
        threshold = self.threshold[0]
        if threshold == threshold:  # NaN while the model failed to load
            self.hub.metrics.threshold(self.name, threshold)
        self.hub.report(self.name, "threshold", f"{threshold:g}")
        self.hub.report(self.name, "detect", "on" if self.detect else "off")
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reading; open events end as ``shutdown`` and their clips are finished."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is None:
            return
        # a SIGTERM that interrupted start() before the thread reported in leaves a thread
        # join refuses; stop() has set the flag it reads, so it ends on its own (a daemon)
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- stats --------------------------------------------------------------------------
    def stats(self) -> CameraStats:
        now = time.monotonic()
        with self._lock:
            latencies = np.array(self._latencies) if self._latencies else None
            drops = dict(self.drops)
        p50 = p99 = None
        if latencies is not None:
            p50, p99 = (float(v) * 1e3 for v in np.percentile(latencies, [50, 99]))
        return CameraStats(
            name=self.name,
            model=self.config.model,
            state=self.state,
            detect=self.detect,
            threshold=self.threshold[0],
            alarm=self.recorder.alarm,
            input_fps=self._input_rate.value(now),
            scored_fps=self._scored_rate.value(now),
            frames_read=self.frames_read,
            frames_scored=self.frames_scored,
            drops=drops,
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            reconnects=self.reconnects,
            latest_score=self.latest_score,
            events_total=self.recorder.events_total,
            error=self.error,
        )

    # --- the thread ---------------------------------------------------------------------
    def _set_state(self, state: CameraState, error: str | None = None) -> None:
        if state is not self.state or error != self.error:
            self.state, self.error = state, error
            self.hub.status(self.name, state)
            if error:
                self.hub.log(f"camera {self.name}: {state.value}: {error}")

    def _run(self) -> None:
        backoff = BACKOFF_S
        try:
            while not self._stop.is_set():
                if self.engine.error is not None:
                    self._set_state(CameraState.ERROR, f"model failed: {self.engine.error}")
                    return
                source = self._open()
                if source is None:
                    self._wait(backoff)
                    backoff = min(2 * backoff, BACKOFF_CAP_S)
                    continue
                self.engine.activate(self.name)
                try:
                    scored_any = self._consume(source)
                except Exception as error:  # noqa: BLE001 - a bug or a full disk: this camera
                    # restarts after its back-off; the service and the other cameras go on
                    self.error = f"{type(error).__name__}: {error}"
                    scored_any = False
                finally:
                    self.engine.activate(self.name, False)
                    self._account_source(source)
                    source.close()
                if self._stop.is_set():
                    return
                if not source.live and not self.config.loop and self.error is None:
                    self._set_state(CameraState.ENDED)
                    return
                if scored_any:
                    backoff = BACKOFF_S
                self._end_events(EndReason.CAMERA_LOST)
                self.reconnects += 1
                self.hub.metrics.reconnect(self.name)
                self._set_state(CameraState.OFFLINE, self.error or "the source stopped")
                self._wait(backoff)
                backoff = min(2 * backoff, BACKOFF_CAP_S)
        finally:
            if self._stop.is_set():
                reason = EndReason.SHUTDOWN
            elif self.state is CameraState.ENDED:
                reason = EndReason.SOURCE_ENDED
            else:
                reason = EndReason.CAMERA_LOST
            self._end_events(reason)
            if self._jsonl is not None:
                self._jsonl.close()

    def _end_events(self, reason: EndReason) -> None:
        """End the open event and finish clips; a failure here (a full disk) is logged, not
        fatal: the event stays open in the store and the next start closes it."""
        try:
            self.recorder.stop(time.time(), reason, self.threshold[0])
        except Exception as error:  # noqa: BLE001
            self.hub.log(f"camera {self.name}: ending its events failed: {error}")

    def _wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _open(self) -> FrameSource | None:
        try:
            source = open_source(
                self.config.source,
                loop=self.config.loop,
                fps=self.config.fps,
                resize=self.config.resize_size(),
            )
        except AdedgeError as error:
            self._set_state(CameraState.OFFLINE, error.one_line())
            return None
        self.error = None
        return source

    def _frames(self, source: FrameSource) -> Iterator[Frame]:
        """Frames until the source ends or the camera stops; a live source is polled so a
        stop is seen within half a second, and its gaps set the camera offline."""
        if isinstance(source, LiveSource):
            while not self._stop.is_set():
                frame = source.take(0.5)
                for record in source.take_events():
                    self._source_record(record)
                if frame is not None:
                    yield frame
                elif source.ended:
                    return
            return
        for frame in source:
            if self._stop.is_set():
                return
            yield frame

    def _source_record(self, record: object) -> None:
        if isinstance(record, GapStarted):
            self._set_state(CameraState.OFFLINE, "no frames from the source; reopening it")
        elif isinstance(record, Reconnect):
            self.reconnects += 1
            self.hub.metrics.reconnect(self.name)
        elif isinstance(record, GapEnded) and record.recovered:
            self.error = None
            self._set_state(CameraState.ONLINE)

    def _account_source(self, source: FrameSource) -> None:
        """The source's own drop counters (newest-frame live capture, undecodable frames)."""
        self._drop(DropReason.STALE, source.dropped - getattr(source, "_stale_seen", 0))
        self._drop(DropReason.DECODE, source.skipped - getattr(source, "_decode_seen", 0))
        source._stale_seen = source.dropped  # type: ignore[attr-defined]
        source._decode_seen = source.skipped  # type: ignore[attr-defined]

    def _drop(self, reason: DropReason, count: int = 1) -> None:
        if count <= 0:
            return
        with self._lock:
            self.drops[reason] = self.drops.get(reason, 0) + count
        self.hub.metrics.dropped(self.name, reason, count)

    def _consume(self, source: FrameSource) -> bool:
        """Read and score until the source ends; returns whether any frame was scored."""
        pending: deque[_Pending] = deque()
        scored_before = self.frames_scored
        min_gap = 0.0 if not (source.live and self.config.fps) else 1.0 / self.config.fps
        # a paced source (live, or an fps cap) waits for each score so that its latency is
        # the engine's, not the wait for the next frame; an unpaced file reads ahead
        in_flight = 1 if (source.live or self.config.fps) else IN_FLIGHT
        try:
            for frame in self._frames(source):
                now = time.monotonic()
                self.frames_read += 1
                self._input_rate.tick(now)
                self.hub.metrics.frame_read(self.name)
                if not self.produced.is_set() or self.state is not CameraState.ONLINE:
                    self.produced.set()
                    self._set_state(CameraState.ONLINE)
                if self.frames_read % 50 == 0:
                    self._account_source(source)
                image, _, rejected = conform_image(frame.image)
                if image is None:
                    self._drop(DropReason.DECODE)
                    continue
                frame.image = image
                self.recorder.frame_read(frame.wall, image)
                if now - self._last_submit < min_gap:
                    self._drop(DropReason.FPS_CAP)
                    continue
                if not self.detect:
                    self._drop(DropReason.DETECT_OFF)
                    continue
                while len(pending) >= IN_FLIGHT:
                    self._handle(pending.popleft())
                try:
                    future = self.engine.submit(self.name, image)
                except Busy:
                    self._drop(DropReason.BUSY)
                    continue
                self._last_submit = now
                pending.append(_Pending(frame, future, now))
                while pending and (len(pending) >= in_flight or pending[0].future.done()):
                    self._handle(pending.popleft())
            while pending:
                self._handle(pending.popleft())
        except AdedgeError as error:
            self.error = error.one_line()
        return self.frames_scored > scored_before

    def _handle(self, item: _Pending) -> None:
        """A frame's score: stats, metrics, the JSONL log, the alarm rule and events."""
        try:
            scored = item.future.result()
        except AdedgeError:
            raise
        except Exception as error:  # noqa: BLE001 - one failed batch: the camera goes on
            self.hub.log(f"camera {self.name}: scoring failed: {type(error).__name__}: {error}")
            return
        done = time.monotonic()
        result = scored.result
        # the threshold of the model that scored this frame (a swap may have come between)
        threshold, source = self.threshold_override or (scored.card_threshold, ThresholdSource.CARD)
        amap = result.amap
        if amap is not None and self.config.masks:
            amap = apply_mask(amap, self._mask(amap.shape[:2]))
            result.amap = amap
        result.regions = self._regions(result.regions, amap)
        # anomalous: above this camera's threshold, or a heatmap region above the card's
        # pixel threshold larger than its minimum area (runtime/regions.py)
        result.anomalous = bool(result.score > threshold or result.regions)
        with self._lock:
            self._latencies.append(done - item.read_at)
        self.frames_scored += 1
        self.latest_score = result.score
        self._scored_rate.tick(done)
        self.hub.metrics.frame_scored(self.name, result.score, done - item.read_at)
        self.hub.score(self.name, result.score, item.frame.wall)
        model = scored.model or self.model  # after a swap: the model that scored this frame
        self.recorder.observe(
            item.frame.wall, item.frame.image, result.score, amap, threshold, source, model,
            regions=result.regions,
        )  # fmt: skip
        result.alarm = self.recorder.alarm
        self.live.put(
            item.frame.wall, item.frame.image, amap, result.score, threshold, result.alarm,
            regions=result.regions,
        )  # fmt: skip
        if self._jsonl is not None:
            self._jsonl.threshold = threshold
            self._jsonl.write(item.frame, result)

    def _regions(
        self, regions: list[Region] | None, amap: np.ndarray | None
    ) -> list[Region] | None:
        """The frame's regions as this camera decides: none with ``pixel: false``, else
        found again on the masked heatmap or with the camera's ``min_area``."""
        config = self.config
        if regions is None or amap is None or not config.pixel:
            return None
        detector = self.engine.detector
        rule = None if detector is None else detector.pixel
        if rule is None or not (config.masks or config.min_area is not None):
            return regions
        if config.min_area is not None:
            rule = dataclasses.replace(rule, min_area_px=float(config.min_area))
        return rule.regions(amap)

    def _mask(self, shape: tuple[int, int]) -> np.ndarray | None:
        mask = self._masks.get(shape)
        if shape not in self._masks:
            polygons = [list(polygon) for polygon in self.config.masks]
            mask = self._masks[shape] = mask_array(polygons, shape)
        return mask
