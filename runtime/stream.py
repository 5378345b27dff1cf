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

import contextlib
import queue
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from adedge import __version__
from adedge.errors import AdedgeError, Terminated, interrupt_exit_code
from adedge.runtime.alarms import AlarmFilter, AlarmTracker, FitWatch
from adedge.runtime.detector import Detector, FrameScore
from adedge.runtime.records import (
    FrameSkipped,
    StreamEnded,
    StreamEvent,
    StreamStarted,
    StreamWarning,
)
from adedge.runtime.sinks import EventSink, Sink
from adedge.runtime.sources import Frame, FrameSource, LiveSource, conform_image

__all__ = ["AlarmFilter", "StreamOptions", "StreamSummary", "run_stream"]

STAGE_ORDER = ("read_ms", "preprocess_ms", "infer_ms", "sink_ms", "total_ms")
PERCENTILES = (50, 95, 99)


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


@dataclass
class StreamSummary:
    """What a stream did. ``frames_read = frames_scored + frames_skipped + frames_unscored``;
    ``frames_scored`` are the results handed to the sinks; ``frames_unscored`` is non-zero
    only when an interrupt hit while a batch was filling. ``frames_skipped`` includes the
    ``frames_rejected`` (by reason); ``frames_converted`` counts conversions by reason.
    ``frames_discarded``: in flight when the stream stopped, never written (not in
    ``frames_read``). ``frames_left_out``: passed over by ``every`` (not read).
    ``skipped_names``: the first ``SKIPPED_NAMES`` inputs skipped (files, or a video with
    the frame position). ``gaps``/``gap_seconds``: stretches a live source had no frames.
    ``alarms`` counts alarms raised: runs of ``alarm_frames`` consecutive anomalous frames
    (a run counts once however long it lasts). ``exit_code``: what the command should exit
    with, 0, or 130 after Ctrl-C and 143 after SIGTERM (0 after q in a display window)."""

    source: str
    backend: str
    threshold: float
    batch: int
    frames_read: int = 0
    frames_scored: int = 0
    frames_skipped: int = 0
    frames_dropped: int = 0
    frames_unscored: int = 0
    frames_discarded: int = 0
    frames_converted: dict[str, int] = field(default_factory=dict)
    frames_rejected: dict[str, int] = field(default_factory=dict)
    frames_left_out: int = 0
    skipped_names: list[str] = field(default_factory=list)
    anomalies: int = 0
    alarms: int = 0
    alarm_frames: int = 1
    gaps: int = 0
    gap_seconds: float = 0.0
    wall_s: float = 0.0
    fps: float = 0.0
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    interrupted: bool = False
    stopped_by: str = "end of source"
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        """A small table for the terminal."""
        lines = [
            f"source   {self.source}",
            f"frames   {self.frames_read} read, {self.frames_scored} scored, "
            f"{self.frames_skipped} skipped, {self.frames_dropped} dropped, "
            f"{self.anomalies} anomalous (threshold {self.threshold:.4g})",
            f"time     {self.wall_s:.2f} s, {self.fps:.1f} frames/s "
            f"(backend {self.backend}, batch {self.batch}); ended by {self.stopped_by}",
        ]
        if self.frames_left_out:
            lines.append(f"         {self.frames_left_out} left out by --every")
        if self.skipped_names:
            more = self.frames_skipped - len(self.skipped_names)
            names = ", ".join(self.skipped_names) + (f" and {more} more" if more > 0 else "")
            lines.append(f"         skipped: {names}")
        if self.frames_unscored:
            lines.append(f"         {self.frames_unscored} read but not scored (interrupted)")
        if self.frames_discarded:
            lines.append(f"         {self.frames_discarded} in flight when stopped, not written")
        if self.frames_converted:
            lines.append(f"         converted: {_reasons(self.frames_converted)}")
        if self.frames_rejected:
            lines.append(f"         rejected (skipped): {_reasons(self.frames_rejected)}")
        if self.gaps:
            lines.append(
                f"gaps     {self.gaps} without frames, {self.gap_seconds:.2f} s in all "
                "(source reopened)"
            )
        lines.append(
            f"alarms   {self.alarms} raised "
            f"({self.alarm_frames} consecutive anomalous frame{'s' * (self.alarm_frames > 1)})"
        )
        if self.latency_ms:
            names = [f"p{p}" for p in PERCENTILES]
            lines.append(f"{'latency ms':<16}" + "".join(f"{n:>10}" for n in names))
            for stage, values in self.latency_ms.items():
                cells = "".join(_cell(values.get(n)) for n in names)
                lines.append(f"  {stage.removesuffix('_ms'):<14}{cells}")
        return "\n".join(lines)


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))


def _cell(value: float | None) -> str:
    return f"{'-':>10}" if value is None else f"{value:>10.3f}"


class _Latencies:
    """Per-stage latencies of the most recent ``window`` frames."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.values: dict[str, deque[float]] = {}

    def add(self, stage: str, ms: float) -> None:
        self.values.setdefault(stage, deque(maxlen=self.window)).append(ms)

    def percentiles(self) -> dict[str, dict[str, float]]:
        order = {name: i for i, name in enumerate(STAGE_ORDER)}
        unknown = order["total_ms"] - 0.5  # a detector's extra stages go before the total
        stages = sorted(self.values, key=lambda s: (order.get(s, unknown), s))
        out = {}
        for stage in stages:
            values = np.percentile(np.fromiter(self.values[stage], float), PERCENTILES)
            out[stage] = {f"p{p}": float(v) for p, v in zip(PERCENTILES, values, strict=True)}
        return out


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _sigterm_interrupts(enabled: bool) -> Iterator[None]:
    if not (enabled and _on_main_thread()):
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    if not _on_main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class _End:
    """The input is over: ``reason`` becomes the summary's ``stopped_by``."""

    reason: str


@dataclass(frozen=True)
class _Failed:
    """An exception in the reader thread, carried to the main thread to be raised there."""

    error: BaseException


POLL_S = 0.05  # queue waits are this short so a failure in another stage is seen promptly
SKIPPED_NAMES = 20  # skipped inputs the summary names
FRAME_SIZES_CHECKED = 16  # distinct frame sizes checked against the model, per stream


class _Reader:
    """Decodes the next frames of a file, folder or scene in its own thread while the model
    scores the current ones. Its queue is bounded: once ``queue_size`` frames wait, ``put``
    blocks and decoding pauses, so read-ahead (and memory) stays bounded whatever the speed of
    the model or the sinks. The source's generator lives and is closed in this thread."""

    def __init__(self, source: FrameSource, queue_size: int, limit: int | None) -> None:
        self.source = source
        self.queue: queue.Queue[Frame | StreamEvent | _End | _Failed] = queue.Queue(
            maxsize=queue_size
        )
        self.failed = False  # the reader's own exception was raised in the main thread
        self.discarded = 0  # frames read ahead and never taken (the stream stopped first)
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(source, limit), name="adedge-reader", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _run(self, source: FrameSource, limit: int | None) -> None:
        frames = iter(source)
        try:
            self._put(self._read(frames, limit))
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            self._put(_Failed(exc))
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def _read(self, frames: Iterator[Frame], limit: int | None) -> _End:
        count = 0
        while limit is None or count < limit:
            frame = next(frames, None)
            for event in self.source.take_events():  # what happened before this frame
                if not self._put(event):
                    return _End("stopped")
            if frame is None:
                return _End("end of source")
            count += 1
            if not self._put(frame):
                self.discarded += 1
                return _End("stopped")
        return _End("max_frames")

    def _put(self, item: Frame | StreamEvent | _End | _Failed) -> bool:
        """Wait for room in the queue (back-pressure); False once the stream is stopping."""
        while not self._stopping.is_set():
            try:
                self.queue.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self, check: Callable[[], None]) -> Frame | StreamEvent | _End:
        """The next frame, event or the end (main thread); ``check`` raises another stage's
        failure."""
        while True:
            try:
                item = self.queue.get(timeout=POLL_S)
            except queue.Empty:
                check()
                continue
            if isinstance(item, _Failed):
                self.failed = True
                raise item.error
            return item

    def stop(self) -> None:
        """Stop reading, wait for the thread, count the frames it read that were never taken."""
        self._stopping.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=30.0)
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            self.discarded += isinstance(item, Frame)


class _LiveInput:
    """A live source needs no reader: its capture thread already keeps only the newest frame,
    and a queue in front of the model would make it score the past. Read in the main thread,
    in short waits, so the source's events (a gap, a reopen attempt) are recorded as they
    happen, not when frames come back."""

    failed = False
    discarded = 0

    def __init__(self, source: LiveSource) -> None:
        self.source = source
        self.taken = 0
        self._pending: deque[Frame | StreamEvent] = deque()

    def start(self) -> None:
        pass

    def get(self, check: Callable[[], None]) -> Frame | StreamEvent | _End:
        limit = self.source.max_frames
        while not self._pending:
            check()
            if limit is not None and self.taken >= limit:
                return _End("max_frames")
            frame = self.source.take(POLL_S * 10)
            items: list[Frame | StreamEvent] = [*self.source.take_events()]
            if frame is not None:
                items.append(frame)
                self.taken += 1
            elif not items and self.source.ended:
                return _End("end of source")
            self._pending.extend(sorted(items, key=lambda item: item.wall))
        return self._pending.popleft()

    def stop(self) -> None:
        self.source.close()


class _SinkStage:
    """Writes results and events to every sink, in order, in its own thread, so a slow sink
    (video encoding, a display) holds the model back only once ``queue_size`` results wait:
    that is back-pressure, never unbounded memory. Alarms, anomaly counts and latencies are
    taken here, so they describe exactly the results the sinks were given; the alarm's
    switching and the fit warning become events written right after their frame."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        queue_size: int,
        alarm: AlarmTracker,
        latencies: _Latencies,
        fit: FitWatch | None = None,
    ) -> None:
        self.sinks, self.alarm, self.latencies, self.fit = sinks, alarm, latencies, fit
        self.recorders = [sink for sink in sinks if isinstance(sink, EventSink)]
        self.queue: queue.Queue[tuple[Frame, FrameScore] | StreamEvent | None] = queue.Queue(
            maxsize=queue_size
        )
        self.written = 0  # results handed to the sinks (a sink may raise on one of them)
        self.anomalies = 0
        self.error: BaseException | None = None
        self.raised = False  # ``error`` was raised in the main thread
        self._halt = threading.Event()  # stop after the result in hand, leave the queue
        self._thread = threading.Thread(target=self._run, name="adedge-sinks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._halt.is_set():
                item = self.queue.get()
                if item is None or self._halt.is_set():
                    return
                if isinstance(item, StreamEvent):
                    self.record(item)
                else:
                    self._write(*item)
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            self.error = exc

    def record(self, event: StreamEvent) -> None:
        """Hand one event to every sink that records events."""
        for sink in self.recorders:
            sink.event(event)

    def _write(self, frame: Frame, result: FrameScore) -> None:
        self.written += 1
        self.anomalies += bool(result.anomalous)
        events = self.alarm.observe(frame, result)
        if self.fit is not None:
            events += self.fit.observe(result)
        start = time.perf_counter()
        for sink in self.sinks:
            sink.write(frame, result)
        for event in events:
            self.record(event)
        sink_ms = (time.perf_counter() - start) * 1e3
        for stage, ms in result.latency_ms.items():
            self.latencies.add(stage, ms)
        self.latencies.add("sink_ms", sink_ms)
        work = sum(ms for stage, ms in result.latency_ms.items() if stage != "read_ms")
        self.latencies.add("total_ms", work + sink_ms)

    def check(self) -> None:
        """Raise the sink thread's exception (the same object) in the main thread."""
        if self.error is not None and not self.raised:
            self.raised = True
            raise self.error

    def put(self, item: tuple[Frame, FrameScore] | StreamEvent) -> None:
        """Hand one result or event over; blocks while the queue is full (back-pressure)."""
        while True:
            self.check()
            try:
                self.queue.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def halt(self) -> None:
        """Write nothing after the result in hand (takes effect at once, from any thread)."""
        self._halt.set()

    def finish(self, drain: bool) -> None:
        """Let the thread write every queued result (``drain``) or only the one in hand, then
        wait for it. Safe to call again."""
        if not drain:
            self.halt()
        if self._thread.ident is None:
            return
        while self._thread.is_alive():
            try:
                self.queue.put(None, timeout=POLL_S)
                break
            except queue.Full:
                continue
        self._thread.join()

    def close_records(self, events: Sequence[StreamEvent]) -> None:
        """The last events (an alarm still on, the end), after the thread has stopped: each
        sink gets them even if another sink failed."""
        for event in events:
            for sink in self.recorders:
                with contextlib.suppress(Exception):
                    sink.event(event)


class _Stream:
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
        self.latencies = _Latencies(options.latency_window)
        self.sink_stage = _SinkStage(
            sinks,
            options.queue_size,
            AlarmTracker(options.alarm_frames),
            self.latencies,
            FitWatch(detector.trained_on()) if options.fit_warnings else None,
        )
        self.input: _Reader | _LiveInput = (
            _LiveInput(source)
            if isinstance(source, LiveSource)
            else _Reader(source, options.queue_size, options.max_frames)
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
            if isinstance(item, _End):
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
    return StreamStarted(
        source.describe(),
        str(detector.bundle.path),
        detector.card.method,
        str(getattr(detector, "backend_name", "")),
        float(detector.threshold),
        __version__,
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
    stream = _Stream(detector, source, sinks, options)
    interrupted = False
    start = time.perf_counter()
    try:
        with _sigterm_interrupts(options.handle_sigterm):
            stream.sink_stage.put(started_event(detector, source))
            stream.run()
    except KeyboardInterrupt as exc:
        interrupted = True
        stream.interrupted(exc)
    finally:
        with _signals_ignored():
            try:
                stream.stop()
            finally:
                wall = time.perf_counter() - start
                _close_all(source, sinks)
    error = stream.late_error()
    if error is not None:
        raise error
    return stream.summary(source, wall, interrupted)
