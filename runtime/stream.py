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

from adedge.errors import AdedgeError
from adedge.runtime.detector import Detector, FrameScore
from adedge.runtime.sinks import Sink
from adedge.runtime.sources import Frame, FrameSource, conform_image

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
    sinks are writing."""

    batch: int = 1
    max_frames: int | None = None
    handle_sigterm: bool = True
    latency_window: int = 10_000
    alarm_frames: int = 1
    queue_size: int = 8
    drain_on_interrupt: bool = False

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
    ``frames_read``). ``gaps``/``gap_seconds``: stretches a live source had no frames.
    ``alarms`` counts alarms raised: runs of ``alarm_frames`` consecutive anomalous frames
    (a run counts once however long it lasts)."""

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


class AlarmFilter:
    """Turns per-frame labels into alarms: on only after ``frames`` consecutive anomalous
    frames, so a single noisy frame raises nothing; it stays on until a normal frame.

    "Consecutive" means consecutive scored frames: on a live source the frames dropped in
    between are not seen. A frame whose score is not a number is not anomalous and breaks
    the run.
    """

    def __init__(self, frames: int = 1) -> None:
        if frames < 1:
            raise AdedgeError(f"alarm frames must be 1 or more (got {frames})", "pass 1 or more")
        self.frames = frames
        self.run = 0
        self.raised = 0

    def update(self, anomalous: bool) -> bool:
        """Take the next frame's label; returns whether the alarm is on for that frame."""
        self.run = self.run + 1 if anomalous else 0
        if self.run == self.frames:
            self.raised += 1
        return self.run >= self.frames


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


class _Terminated(KeyboardInterrupt):
    """SIGTERM raised where the stream is, so that it ends exactly like Ctrl-C."""

    reason = "SIGTERM"


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _sigterm_interrupts(enabled: bool) -> Iterator[None]:
    if not (enabled and _on_main_thread()):
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise _Terminated()

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


class _Reader:
    """Decodes the next frames of a file, folder or scene in its own thread while the model
    scores the current ones. Its queue is bounded: once ``queue_size`` frames wait, ``put``
    blocks and decoding pauses, so read-ahead (and memory) stays bounded whatever the speed of
    the model or the sinks. The source's generator lives and is closed in this thread."""

    def __init__(self, source: FrameSource, queue_size: int, limit: int | None) -> None:
        self.queue: queue.Queue[Frame | _End | _Failed] = queue.Queue(maxsize=queue_size)
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
            if frame is None:
                return _End("end of source")
            count += 1
            if not self._put(frame):
                self.discarded += 1
                return _End("stopped")
        return _End("max_frames")

    def _put(self, item: Frame | _End | _Failed) -> bool:
        """Wait for room in the queue (back-pressure); False once the stream is stopping."""
        while not self._stopping.is_set():
            try:
                self.queue.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self, check: Callable[[], None]) -> Frame | _End:
        """The next frame or the end (main thread); ``check`` raises another stage's failure."""
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
    and a queue in front of the model would make it score the past. Read in the main thread."""

    failed = False
    discarded = 0

    def __init__(self, source: FrameSource) -> None:
        self._frames = iter(source)

    def start(self) -> None:
        pass

    def get(self, check: Callable[[], None]) -> Frame | _End:
        check()
        frame = next(self._frames, None)
        return _End("end of source") if frame is None else frame

    def stop(self) -> None:
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()


class _SinkStage:
    """Writes results to every sink, in order, in its own thread, so a slow sink (video
    encoding, a display) holds the model back only once ``queue_size`` results wait: that is
    back-pressure, never unbounded memory. Alarms, anomaly counts and latencies are taken here,
    so they describe exactly the results the sinks were given."""

    def __init__(
        self, sinks: Sequence[Sink], queue_size: int, alarm: AlarmFilter, latencies: _Latencies
    ) -> None:
        self.sinks, self.alarm, self.latencies = sinks, alarm, latencies
        self.queue: queue.Queue[tuple[Frame, FrameScore] | None] = queue.Queue(maxsize=queue_size)
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
                self._write(*item)
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            self.error = exc

    def _write(self, frame: Frame, result: FrameScore) -> None:
        self.written += 1
        self.anomalies += bool(result.anomalous)
        result.alarm = self.alarm.update(bool(result.anomalous))
        start = time.perf_counter()
        for sink in self.sinks:
            sink.write(frame, result)
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

    def put(self, frame: Frame, result: FrameScore) -> None:
        """Hand one result over; blocks while the queue is full (back-pressure)."""
        while True:
            self.check()
            try:
                self.queue.put((frame, result), timeout=POLL_S)
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
        self.detector, self.options = detector, options
        self.size = 1 if source.live else options.batch
        self.latencies = _Latencies(options.latency_window)
        self.sink_stage = _SinkStage(
            sinks, options.queue_size, AlarmFilter(options.alarm_frames), self.latencies
        )
        self.input: _Reader | _LiveInput = (
            _LiveInput(source)
            if source.live
            else _Reader(source, options.queue_size, options.max_frames)
        )
        self.converted: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.taken = self.delivered = self.handed = 0
        self.stopped_by = "end of source"
        self.drain = True  # on the way out, let the sinks write every result already scored

    def run(self) -> None:
        """Read, conform, batch, score and hand over until the input ends; then let the sinks
        finish and raise their failure, if any."""
        self.sink_stage.start()
        self.input.start()
        pending: list[tuple[Frame, float]] = []
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
            self.taken += 1
            frame = self._conform(item)
            if frame is None:
                continue
            self.delivered += 1
            pending.append((frame, read_ms))
            if len(pending) >= self.size:
                batch, pending = pending, []
                self._score(batch)
        if pending:
            self._score(pending)
        self.sink_stage.finish(drain=True)
        self.sink_stage.check()

    def _conform(self, frame: Frame) -> Frame | None:
        """The frame with its image made scoreable, or None (rejected, counted as skipped)."""
        image, converted, rejected = conform_image(frame.image)
        self.converted.update(converted)
        if rejected is not None:
            self.rejected[rejected] += 1
            return None
        frame.image = image
        return frame

    def _score(self, batch: list[tuple[Frame, float]]) -> None:
        results = self.detector.score_frames([frame.image for frame, _ in batch])
        for (frame, read_ms), result in zip(batch, results, strict=True):
            result.latency_ms = {"read_ms": read_ms, **result.latency_ms}
            self.sink_stage.put(frame, result)
            self.handed += 1

    def interrupted(self, exc: KeyboardInterrupt) -> None:
        """Ctrl-C, SIGTERM, or a source or sink that raised KeyboardInterrupt.

        From the source it comes in order, after the frames before it: the sinks still get
        every result scored. From a sink (``q`` in a display window) the sinks stop at once.
        A signal stops them after the frame in hand unless ``drain_on_interrupt``: a signal
        sent while a sink writes frame N means "stop at frame N".
        """
        self.stopped_by = str(getattr(exc, "reason", "Ctrl-C (SIGINT)"))
        if not self.input.failed:
            self.drain = self.options.drain_on_interrupt and not self.sink_stage.raised
        if not self.drain:
            self.sink_stage.halt()  # now, not after the reader has been joined

    def stop(self) -> None:
        """Stop the reader first (nothing new comes in), then the sinks; join both threads."""
        try:
            self.input.stop()
        finally:
            self.sink_stage.finish(self.drain)

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
