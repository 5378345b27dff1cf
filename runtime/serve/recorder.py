"""One camera's events as they happen: the alarm rule's transitions become :class:`Event`
rows with their evidence and messages.

* ``new``: the evidence of the frame that fired the rule (snapshot with heatmap and box, or
  with pixel decisions its regions outlined; raw frame, heatmap PNG) is written, then the
  event (with the peak frame's regions, where there are pixel decisions) is committed to the
  store and announced; the snapshot also goes to the camera's retained MQTT ``snapshot``
  topic. A clip starts from the pre-roll ring buffer.
* ``update``: the peak rose (rate-limited by the lifecycle); the peak frame is kept.
* every scored frame's score is kept from ``pre_s`` before the event to its end, and written
  as the event's score trace (``trace.json``, the console's chart) when it ends.
* ``end``: the evidence is rewritten from the peak frame, and the message waits until the
  clip's post-roll is recorded, so the ``end`` message names a finished clip. The event's
  ``end`` time is still when the cooldown passed. A new event may open meanwhile.

On stop (SIGTERM) open events end as ``shutdown`` and clips are finished at once with what
they hold.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from adedge.atomic import write_text
from adedge.runtime.regions import Region
from adedge.runtime.serve.api_types import ScoreHistory, ScorePoint
from adedge.runtime.serve.config import CameraConfig
from adedge.runtime.serve.event_types import (
    Box,
    EndReason,
    Event,
    EventRegion,
    MediaKind,
    MessageType,
    ModelRef,
    ThresholdSource,
)
from adedge.runtime.serve.evidence import (
    ClipRecorder,
    PeakFrame,
    PreRoll,
    hottest_box,
    write_evidence,
)
from adedge.runtime.serve.hub import Hub
from adedge.runtime.serve.lifecycle import EventLifecycle, Transition
from adedge.runtime.sinks.annotate import HeatmapScale

TRACE_BEFORE = 256  # scores kept from before an event (those within pre_s go in its trace)
TRACE_MAX_POINTS = 4096  # a longer event's trace keeps every other point


class _Peak:
    """The frame an event's evidence is drawn from (copied: sources may reuse buffers),
    with its regions above the pixel threshold (None: no pixel decisions)."""

    def __init__(
        self,
        wall: float,
        image: np.ndarray,
        amap: np.ndarray | None,
        score: float,
        regions: list[Region] | None = None,
    ):
        self.wall, self.score = wall, score
        self.image = image.copy()
        self.amap = None if amap is None else amap.copy()
        self.regions = None if regions is None else list(regions)


class _Ending:
    """An event whose cooldown passed, waiting for its clip's post-roll."""

    def __init__(self, event: Event, clip: ClipRecorder | None) -> None:
        self.event, self.clip = event, clip


class EventRecorder:
    """Turns one camera's scored frames into events (see the module docstring)."""

    def __init__(
        self, camera: str, config: CameraConfig, node: str, labels: dict[str, str], hub: Hub
    ) -> None:
        self.camera, self.config, self.node, self.labels, self.hub = (
            camera,
            config,
            node,
            labels,
            hub,
        )
        self.lifecycle = EventLifecycle(config.alarm)
        evidence = config.evidence
        self.preroll = PreRoll(
            evidence.pre_s if evidence.clip else 0.0, max_bytes=evidence.pre_max_bytes
        )
        self.heat = HeatmapScale()
        self.event: Event | None = None
        self.peak: _Peak | None = None
        self.clip: ClipRecorder | None = None
        self.ending: list[_Ending] = []
        self.events_total = 0
        self.recent: deque[tuple[float, float, bool]] = deque(maxlen=TRACE_BEFORE)
        self.trace: list[tuple[float, float, bool]] = []

    @property
    def alarm(self) -> bool:
        return self.lifecycle.active

    def frame_read(self, wall: float, image: np.ndarray) -> None:
        """Every frame read (scored or not) feeds the clip's pre-roll."""
        if self.config.evidence.clip:
            self.preroll.add(wall, image)

    def observe(
        self,
        wall: float,
        image: np.ndarray,
        score: float,
        amap: np.ndarray | None,
        threshold: float,
        source: ThresholdSource,
        model: ModelRef,
        regions: list[Region] | None = None,
    ) -> None:
        """One scored frame (``amap`` already masked; ``regions``: its regions above the
        pixel threshold, None without pixel decisions)."""
        heat_range = self.heat.update(amap) if amap is not None else None
        transition = self.lifecycle.observe(wall, score, threshold, flagged=bool(regions))
        point = (wall, score, self.lifecycle.active or transition is Transition.ENDED)
        self.recent.append(point)
        if self.event is not None:
            self._trace_add(point)
        event = self.event
        if event is not None and self.peak is not None and score > self.peak.score:
            self.peak = _Peak(wall, image, amap, score, regions)
        if self.clip is not None:
            self.clip.add(wall, image)
        for ending in self.ending:
            if ending.clip is not None and not ending.clip.done:
                ending.clip.add(wall, image)
        if transition is Transition.OPENED:
            self._open(wall, image, amap, score, threshold, source, model, heat_range, regions)
        elif transition is Transition.PEAK and event is not None:
            self._sync(event)
            self.hub.publish(event, MessageType.UPDATE)
        elif transition is Transition.ENDED and event is not None:
            self._sync(event)
            event.end, event.end_reason = wall, EndReason.NORMAL
            self._write_peak_evidence(event, threshold, heat_range)
            self._write_trace(event, threshold)
            self.hub.alarm(self.camera, False)
            if self.clip is not None:
                self.clip.end_event(wall)
            self.ending.append(_Ending(event, self.clip))
            self.event, self.peak, self.clip = None, None, None
        self._finish_endings(force=False)

    def stop(self, wall: float, reason: EndReason, threshold: float) -> None:
        """End the open event now (``reason``) and finish every clip with what it holds."""
        event = self.event
        if event is not None:
            self.lifecycle.close()
            self._sync(event)
            event.end, event.end_reason = wall, reason
            self._write_peak_evidence(event, threshold, None)
            self._write_trace(event, threshold)
            self.hub.alarm(self.camera, False)
            self.ending.append(_Ending(event, self.clip))
            self.event, self.peak, self.clip = None, None, None
        self._finish_endings(force=True)

    # --- internals ----------------------------------------------------------------------
    def _open(
        self,
        wall: float,
        image: np.ndarray,
        amap: np.ndarray | None,
        score: float,
        threshold: float,
        source: ThresholdSource,
        model: ModelRef,
        heat_range: tuple[float, float] | None,
        regions: list[Region] | None = None,
    ) -> None:
        start = self.lifecycle.event.start if self.lifecycle.event else wall
        event = Event(
            id=Event.new_id(self.camera, start),
            node=self.node,
            camera=self.camera,
            model=model,
            start=start,
            peak_score=score,
            peak_time=wall,
            threshold=threshold,
            threshold_source=source,
            frames=1,
            labels=dict(self.labels),
        )
        self.event = event
        self.peak = _Peak(wall, image, amap, score, regions)
        since = start - self.config.evidence.pre_s
        self.trace = [point for point in self.recent if point[0] >= since]
        self._write_peak_evidence(event, threshold, heat_range, stored=False)
        self.hub.publish(event, MessageType.NEW)
        self.events_total += 1
        self.hub.alarm(self.camera, True)
        options = self.config.evidence
        if options.clip:
            path = self.hub.store.media_file(self.camera, event.id, MediaKind.CLIP, ".mp4")
            fps = options.clip_fps or (self.config.fps if self.config.fps else None)
            self.clip = ClipRecorder(path, self.preroll.frames(), options.post_s, fps)
            self.clip.add(wall, image)

    def _trace_add(self, point: tuple[float, float, bool]) -> None:
        self.trace.append(point)
        if len(self.trace) > TRACE_MAX_POINTS:
            self.trace = self.trace[::2]

    def _write_trace(self, event: Event, threshold: float) -> None:
        """The event's scores as a ScoreHistory JSON file among its media."""
        store = self.hub.store
        path = store.media_file(self.camera, event.id, MediaKind.TRACE, ".json")
        history = ScoreHistory(
            camera=self.camera,
            threshold=threshold if threshold == threshold else None,
            points=[ScorePoint(t=t, score=s, alarm=a) for t, s, a in self.trace],
        )
        write_text(path, history.model_dump_json())
        store.add_media(event.id, MediaKind.TRACE, path)
        event.media[MediaKind.TRACE] = str(path.relative_to(store.media_dir))
        self.trace = []

    def _sync(self, event: Event) -> None:
        """The event row from the lifecycle's state: peak and frame count."""
        state = self.lifecycle.event or self.lifecycle.ended
        if state is not None:
            event.peak_score, event.peak_time, event.frames = (
                state.peak_score,
                state.peak_time,
                state.frames,
            )

    def _write_peak_evidence(
        self,
        event: Event,
        threshold: float,
        heat_range: tuple[float, float] | None,
        stored: bool = True,
    ) -> None:
        """Evidence from the peak frame; a ``stored`` event's files are re-attached (the
        first write is adopted by the ``new`` message's commit)."""
        peak = self.peak
        if peak is None:
            return
        options = self.config.evidence
        box = None if peak.amap is None else hottest_box(peak.amap, peak.image.shape[:2])
        event.box = box
        event.regions = (
            None
            if peak.regions is None
            else [EventRegion(r.area, Box(*r.box)) for r in peak.regions]
        )
        store = self.hub.store

        def target(kind: MediaKind, suffix: str) -> Path:
            return store.media_file(self.camera, event.id, kind, suffix)

        shown = PeakFrame(
            self.camera, peak.wall, peak.image, peak.amap, box, peak.score, threshold, peak.regions
        )
        written = write_evidence(target, shown, options, heat_range)
        for kind, path in written.items():
            event.media[kind] = str(path.relative_to(store.media_dir))
            if stored:  # rewritten from the peak frame: measured again against the cap
                store.add_media(event.id, kind, path)
        if MediaKind.SNAPSHOT in written:  # the camera's retained MQTT snapshot
            self.hub.snapshot(self.camera, written[MediaKind.SNAPSHOT].read_bytes())

    def _finish_endings(self, force: bool) -> None:
        """Send the ``end`` of every event whose clip is complete (all of them: ``force``)."""
        waiting = []
        for ending in self.ending:
            clip = ending.clip
            if clip is not None and not (clip.done or force):
                waiting.append(ending)
                continue
            event = ending.event
            if clip is not None:
                path = clip.finish()
                if path is not None:
                    self.hub.store.add_media(event.id, MediaKind.CLIP, path)
                    event.media[MediaKind.CLIP] = str(path.relative_to(self.hub.store.media_dir))
            self.hub.publish(event, MessageType.END)
        self.ending = waiting
