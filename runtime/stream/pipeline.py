"""The stream: frames from a source, scored in micro-batches, written to the sinks.

It is a pipeline of three stages joined by bounded queues (``StreamOptions.queue_size``):
a reader thread decodes the next frames of a file, folder or scene while the model runs
(a live source has its own capture thread that keeps only the newest frame, and batch 1);
the main thread conforms, batches and scores them (``Detector.score_frames``); a sink thread
writes each result to every sink, in order. A full queue blocks the stage feeding it, so a
slow sink slows the reader (files) or makes the camera thread drop more frames (live,
counted): memory never grows without bound. An exception in the reader or sink thread is
raised again, the same object, in the main thread after the cleanup below.

``run_stream`` owns the source and the sinks it is given: it closes all of them in
``finally``, whatever ends the stream (end of source, ``max_frames``, an error, Ctrl-C or
SIGTERM), so file sinks are renamed into place complete. Ctrl-C and SIGTERM are not errors:
the stream returns its summary with ``interrupted=True``. They arrive in the main thread: the
reader stops, the sink thread finishes the frame in hand (and, with ``drain_on_interrupt``,
every result already scored), the threads are joined, then sinks and source are closed.
While that happens, further SIGINT/SIGTERM are ignored so an impatient second Ctrl-C cannot
strand a temporary file.

Accounting: ``frames_read = frames_scored + frames_skipped + frames_unscored``, where
scored means handed to the sinks. Frames still in flight when the stream stopped (read
ahead, or scored but not written because a sink or a signal stopped the sinks) are
``frames_discarded``; like ``frames_dropped`` they are outside ``frames_read``.

Latency is measured per frame and stage: ``read_ms`` (the scoring stage waiting for input),
``preprocess_ms`` and ``infer_ms`` (the detector; a batch's time is shared by its frames),
``sink_ms`` (all sinks, measured in the sink thread). ``total_ms`` is the processing time,
preprocess + infer + sinks; it leaves out the wait for the camera, which measures the camera,
not adedge. The summary gives p50/p95/p99 of each stage over the most recent
``latency_window`` frames.

Alarms: ``FrameScore.anomalous`` stays the per-frame label; the stream's :class:`AlarmFilter`
sets ``FrameScore.alarm`` once ``alarm_frames`` consecutive frames are anomalous, so one noisy
frame on a production line does not raise an event; sinks read that field.

Records: besides every scored frame, sinks that take events (:class:`EventSink`) get, in
order with the frames, the stream's start and end, alarms switching on and off, a live
source's gaps and reopen attempts, skipped inputs, and warnings (frames whose size does not
fit the model; nearly every frame anomalous). See :mod:`adedge.runtime.records`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from adedge import __version__
from adedge.errors import AdedgeError, interrupt_exit_code
from adedge.runtime.alarms import AlarmTracker, FitWatch
from adedge.runtime.detector import Detector
from adedge.runtime.records import (
    FrameSkipped,
    StreamEnded,
    StreamEvent,
    StreamStarted,
    StreamWarning,
)
from adedge.runtime.sinks import Sink
from adedge.runtime.sources import Frame, FrameSource, LiveSource, conform_image
from adedge.runtime.stream.inputs import FRAME_SIZES_CHECKED, SKIPPED_NAMES, End, LiveInput, Reader
from adedge.runtime.stream.signals import signals_ignored, sigterm_interrupts
from adedge.runtime.stream.sink_stage import SinkStage
from adedge.runtime.stream.summary import Latencies, StreamSummary


@dataclass
class StreamOptions:
    """``batch``: frames per inference call for files, folders and the synthetic scene
    (live sources always use 1: batching would make a camera frame wait for the next ones).
    ``max_frames``: stop after this many frames. ``latency_window``: percentiles are over
    the most recent frames, so memory stays bounded on an endless stream. ``alarm_frames``:
    consecutive anomalous frames that raise an alarm (1: every anomalous frame).
    ``queue_size``: frames each queue between stages holds (read-ahead, results waiting for
    the sinks); small, so memory and the delay behind a slow sink stay bounded.
    ``drain_on_interrupt``: on Ctrl-C/SIGTERM, write every result already scored before
    stopping (at most ``queue_size`` + ``batch``) instead of stopping after the frame the
    sinks are writing. ``fit_warnings``: warn when frames do not fit the model (their size,
    or nearly all of them anomalous)."""

    batch: int = 1
    max_frames: int | None = None
    handle_sigterm: bool = True
    latency_window: int = 10_000
    alarm_frames: int = 1
    queue_size: int = 8
    drain_on_interrupt: bool = False
    fit_warnings: bool = True

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise AdedgeError(f"batch must be 1 or more (got {self.batch})", "pass --batch 1")
        if self.alarm_frames < 1:
            raise AdedgeError(
                f"alarm frames must be 1 or more (got {self.alarm_frames})",
                "pass --alarm-frames 1 to raise an alarm on every anomalous frame",
            )
        if self.max_frames is not None and self.max_frames < 0:
            raise AdedgeError(f"max_frames is negative ({self.max_frames})", "pass 0 or more")
        if self.queue_size < 1:
            raise AdedgeError(f"queue size must be 1 or more (got {self.queue_size})", "pass 8")


class Stream:
    """One run of the pipeline: input (reader thread, or the live source's capture thread) ->
    scoring (preprocess, backend, aggregate: ``detector.score_frames``) here in the main
    thread, where Ctrl-C and SIGTERM arrive -> the sink thread.

    Counting: ``taken`` frames came out of the input, ``delivered`` of them were accepted
    (the others were rejected by :func:`conform_image`), ``handed`` results went to the sink
    stage, and the sink stage counts what it ``written``.
    """

    def __init__(
        self,
        detector: Detector,
        source: FrameSource,
        sinks: Sequence[Sink],
        options: StreamOptions,
    ) -> None:
        self.detector, self.options, self.source = detector, options, source
        self.size = 1 if source.live else options.batch
        self.latencies = Latencies(options.latency_window)
        self.sink_stage = SinkStage(
            sinks,
            options.queue_size,
            AlarmTracker(options.alarm_frames),
            self.latencies,
            FitWatch(detector.trained_on()) if options.fit_warnings else None,
        )
        self.input: Reader | LiveInput = (
            LiveInput(source)
            if isinstance(source, LiveSource)
            else Reader(source, options.queue_size, options.max_frames)
        )
        self.converted: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.skipped_names: list[str] = []
        self.sizes_checked: set[tuple[int, int]] = set()
        self.taken = self.delivered = self.handed = 0
        self.stopped_by = "end of source"
        self.exit_code = 0  # what a command ends with: 130 after Ctrl-C, 143 after SIGTERM
        self.drain = True  # on the way out, let the sinks write every result already scored

    def run(self) -> None:
        """Read, conform, batch, score and hand over until the input ends; then let the sinks
        finish and raise their failure, if any."""
        self.sink_stage.start()
        self.input.start()
        pending: list[tuple[Frame, float] | StreamEvent] = []  # a batch, events in order
        frames = 0
        limit = self.options.max_frames
        while True:
            if limit is not None and self.taken >= limit:
                self.stopped_by = "max_frames"
                break
            start = time.perf_counter()
            item = self.input.get(self.sink_stage.check)
            read_ms = (time.perf_counter() - start) * 1e3
            if isinstance(item, End):
                self.stopped_by = item.reason
                break
            if isinstance(item, StreamEvent):
                self._note(item)
                if frames:  # behind frames still filling a batch: keep the order
                    pending.append(item)
                else:  # recorded now (a live source's gap must not wait for frames)
                    pending = self._hand_over(pending, item)
                continue
            self.taken += 1
            frame = self._conform(item, pending)
            if frame is None:
                continue
            self.delivered += 1
            pending.append((frame, read_ms))
            frames += 1
            if frames >= self.size:
                batch, pending, frames = pending, [], 0
                self._score(batch)
        if pending:
            self._score(pending)
        self.sink_stage.finish(drain=True)
        self.sink_stage.check()

    def _hand_over(
        self, pending: list[tuple[Frame, float] | StreamEvent], event: StreamEvent
    ) -> list[tuple[Frame, float] | StreamEvent]:
        """Hand ``pending`` (events only) and ``event`` to the sinks; an empty batch."""
        for item in (*pending, event):
            self.sink_stage.put(item)  # type: ignore[arg-type]
        return []

    def _note(self, event: StreamEvent) -> None:
        """Keep the names of the first skipped inputs for the summary."""
        if isinstance(event, FrameSkipped) and len(self.skipped_names) < SKIPPED_NAMES:
            one_file = event.name == self.source.label and event.position is not None
            self.skipped_names.append(f"{event.name}#{event.position}" if one_file else event.name)

    def _conform(
        self, frame: Frame, pending: list[tuple[Frame, float] | StreamEvent]
    ) -> Frame | None:
        """The frame with its image made scoreable, or None (rejected, counted as skipped
        and recorded); a frame of a size not seen before is checked against the model."""
        image, converted, rejected = conform_image(frame.image)
        self.converted.update(converted)
        if rejected is not None:
            self.rejected[rejected] += 1
            event = FrameSkipped(frame.name, f"image rejected: {rejected}", position=frame.index)
            self._note(event)
            pending.append(event)
            return None
        frame.image = image
        size = (int(image.shape[0]), int(image.shape[1]))
        unseen = size not in self.sizes_checked and len(self.sizes_checked) < FRAME_SIZES_CHECKED
        if self.options.fit_warnings and unseen:
            self.sizes_checked.add(size)
            pending.extend(StreamWarning(text) for text in self.detector.frame_warnings(size))
        return frame

    def _score(self, batch: list[tuple[Frame, float] | StreamEvent]) -> None:
        frames = [item for item in batch if not isinstance(item, StreamEvent)]
        results = iter(self.detector.score_frames([frame.image for frame, _ in frames]))
        for item in batch:
            if isinstance(item, StreamEvent):
                self.sink_stage.put(item)
                continue
            frame, read_ms = item
            result = next(results)
            result.latency_ms = {"read_ms": read_ms, **result.latency_ms}
            self.sink_stage.put((frame, result))
            self.handed += 1

    def interrupted(self, exc: KeyboardInterrupt) -> None:
        """Ctrl-C, SIGTERM, or a source or sink that raised KeyboardInterrupt.

        From the source it comes in order, after the frames before it: the sinks still get
        every result scored. From a sink (``q`` in a display window) the sinks stop at once.
        A signal stops them after the frame in hand unless ``drain_on_interrupt``: a signal
        sent while a sink writes frame N means "stop at frame N".
        """
        self.stopped_by = str(getattr(exc, "reason", "Ctrl-C (SIGINT)"))
        self.exit_code = interrupt_exit_code(exc)
        if not self.input.failed:
            self.drain = self.options.drain_on_interrupt and not self.sink_stage.raised
        if not self.drain:
            self.sink_stage.halt()  # now, not after the reader has been joined

    def stop(self) -> None:
        """Stop the reader first (nothing new comes in), then the sinks; join both threads;
        then record an alarm still on and the end of the stream."""
        try:
            self.input.stop()
        finally:
            self.sink_stage.finish(self.drain)
            stage = self.sink_stage
            self.sink_stage.close_records(
                [
                    *self.source.take_events(),
                    *stage.alarm.finish(f"stream ended ({self.stopped_by})"),
                    StreamEnded(
                        self.stopped_by, stage.written, stage.anomalies, stage.alarm.raised
                    ),
                ]
            )

    def late_error(self) -> BaseException | None:
        """A sink failure that happened while draining after an interrupt (not yet raised)."""
        error = self.sink_stage.error
        if error is None or self.sink_stage.raised or isinstance(error, KeyboardInterrupt):
            return None
        return error

    def summary(self, source: FrameSource, wall: float, interrupted: bool) -> StreamSummary:
        written = self.sink_stage.written
        unscored = self.delivered - self.handed if self.drain else 0
        skipped = source.skipped + sum(self.rejected.values())
        gaps = list(getattr(source, "gaps", ()))
        return StreamSummary(
            source=source.describe(),
            backend=str(getattr(self.detector, "backend_name", "")),
            threshold=float(self.detector.threshold),
            batch=self.size,
            frames_read=written + skipped + unscored,
            frames_scored=written,
            frames_skipped=skipped,
            frames_dropped=source.dropped,
            frames_unscored=unscored,
            frames_discarded=self.input.discarded + self.delivered - written - unscored,
            frames_converted=dict(self.converted),
            frames_rejected=dict(self.rejected),
            frames_left_out=source.left_out,
            skipped_names=list(self.skipped_names),
            anomalies=self.sink_stage.anomalies,
            frames_with_regions=self.sink_stage.with_regions,
            alarms=self.sink_stage.alarm.raised,
            alarm_frames=self.options.alarm_frames,
            gaps=len(gaps),
            gap_seconds=float(sum(gap.seconds for gap in gaps)),
            wall_s=wall,
            fps=written / wall if wall > 0 else 0.0,
            latency_ms=self.latencies.percentiles(),
            interrupted=interrupted,
            stopped_by=self.stopped_by,
            exit_code=self.exit_code,
        )


def started_event(detector: Detector, source: FrameSource) -> StreamStarted:
    pixel = getattr(detector, "pixel", None)
    return StreamStarted(
        source.describe(),
        str(detector.bundle.path),
        detector.card.method,
        str(getattr(detector, "backend_name", "")),
        float(detector.threshold),
        __version__,
        pixel_threshold=None if pixel is None else pixel.value,
        min_area=None if pixel is None else pixel.min_area_px,
    )


def _close_all(source: FrameSource, sinks: Sequence[Sink]) -> None:
    """Close every sink and the source even if one of them fails; re-raise the first error."""
    errors: list[Exception] = []
    for item in (*sinks, source):
        try:
            item.close()
        except Exception as exc:  # noqa: BLE001 - keep closing the others, then re-raise
            errors.append(exc)
    if errors:
        raise errors[0]


def run_stream(
    detector: Detector,
    source: FrameSource,
    sinks: Sequence[Sink] = (),
    options: StreamOptions | None = None,
) -> StreamSummary:
    """Score every frame of ``source`` and hand each result to every sink, in order.

    Returns the summary; Ctrl-C (KeyboardInterrupt) or SIGTERM end the stream cleanly with
    ``interrupted=True``. Other errors, in any stage's thread, propagate (the same exception)
    after the threads are joined and the sinks and the source are closed.
    """
    options = options or StreamOptions()
    for sink in sinks:
        if getattr(sink, "threshold", 0.0) is None:
            sink.threshold = detector.threshold  # type: ignore[attr-defined]
    stream = Stream(detector, source, sinks, options)
    interrupted = False
    start = time.perf_counter()
    try:
        with sigterm_interrupts(options.handle_sigterm):
            stream.sink_stage.put(started_event(detector, source))
            stream.run()
    except KeyboardInterrupt as exc:
        interrupted = True
        stream.interrupted(exc)
    finally:
        with signals_ignored():
            try:
                stream.stop()
            finally:
                wall = time.perf_counter() - start
                _close_all(source, sinks)
    error = stream.late_error()
    if error is not None:
        raise error
    return stream.summary(source, wall, interrupted)
