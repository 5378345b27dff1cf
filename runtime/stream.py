"""The stream loop: frames from a source, scored in micro-batches, written to the sinks.

``run_stream`` owns the source and the sinks it is given: it closes all of them in
``finally``, whatever ends the stream (end of source, ``max_frames``, an error, Ctrl-C or
SIGTERM), so file sinks are renamed into place complete. Ctrl-C and SIGTERM are not errors:
the stream returns its summary with ``interrupted=True``. While the sinks are being closed,
further SIGINT/SIGTERM are ignored so an impatient second Ctrl-C cannot strand a temporary file.

Latency is measured per frame and stage: ``read_ms`` (waiting for the source),
``preprocess_ms`` and ``infer_ms`` (the detector; a batch's time is shared by its frames),
``sink_ms`` (all sinks). ``total_ms`` is the processing time, preprocess + infer + sinks;
it leaves out the wait for the camera, which measures the camera, not adedge. The summary
gives p50/p95/p99 of each stage over the most recent ``latency_window`` frames.

Alarms: ``FrameScore.anomalous`` stays the per-frame label; the stream's :class:`AlarmFilter`
sets ``FrameScore.alarm`` once ``alarm_frames`` consecutive frames are anomalous, so one noisy
frame on a production line does not raise an event; sinks read that field.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from adedge.errors import AdedgeError
from adedge.runtime.detector import Detector, FrameScore
from adedge.runtime.sinks import Sink
from adedge.runtime.sources import Frame, FrameSource

STAGE_ORDER = ("read_ms", "preprocess_ms", "infer_ms", "sink_ms", "total_ms")
PERCENTILES = (50, 95, 99)


@dataclass
class StreamOptions:
    """``batch``: frames per inference call for files, folders and the synthetic scene
    (live sources always use 1: batching would make a camera frame wait for the next ones).
    ``max_frames``: stop after this many frames. ``latency_window``: percentiles are over
    the most recent frames, so memory stays bounded on an endless stream. ``alarm_frames``:
    consecutive anomalous frames that raise an alarm (1: every anomalous frame)."""

    batch: int = 1
    max_frames: int | None = None
    handle_sigterm: bool = True
    latency_window: int = 10_000
    alarm_frames: int = 1

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


@dataclass
class StreamSummary:
    """What a stream did. ``frames_read = frames_scored + frames_skipped + frames_unscored``;
    ``frames_unscored`` is non-zero only when an interrupt hit while a batch was filling.
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
    anomalies: int = 0
    alarms: int = 0
    alarm_frames: int = 1
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


@dataclass
class _Counts:
    alarm: AlarmFilter
    delivered: int = 0
    scored: int = 0
    anomalies: int = 0
    stopped_by: str = "end of source"


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


def _score_batch(
    detector: Detector,
    batch: list[tuple[Frame, float]],
    sinks: Sequence[Sink],
    counts: _Counts,
    latencies: _Latencies,
) -> None:
    results: list[FrameScore] = detector.score_frames([frame.image for frame, _ in batch])
    counts.scored += len(results)
    for (frame, read_ms), result in zip(batch, results, strict=True):
        result.latency_ms = {"read_ms": read_ms, **result.latency_ms}
        counts.anomalies += bool(result.anomalous)
        result.alarm = counts.alarm.update(bool(result.anomalous))
        start = time.perf_counter()
        for sink in sinks:
            sink.write(frame, result)
        sink_ms = (time.perf_counter() - start) * 1e3
        for stage, ms in result.latency_ms.items():
            latencies.add(stage, ms)
        latencies.add("sink_ms", sink_ms)
        work = sum(ms for stage, ms in result.latency_ms.items() if stage != "read_ms")
        latencies.add("total_ms", work + sink_ms)


def _pump(
    detector: Detector,
    source: FrameSource,
    sinks: Sequence[Sink],
    options: StreamOptions,
    counts: _Counts,
    latencies: _Latencies,
) -> None:
    """Read, batch, score and write until the source ends or ``max_frames`` is reached."""
    size = 1 if source.live else options.batch
    pending: list[tuple[Frame, float]] = []
    frames = iter(source)
    try:
        while True:
            if options.max_frames is not None and counts.delivered >= options.max_frames:
                counts.stopped_by = "max_frames"
                break
            start = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                break
            pending.append((frame, (time.perf_counter() - start) * 1e3))
            counts.delivered += 1
            if len(pending) >= size:
                batch, pending = pending, []
                _score_batch(detector, batch, sinks, counts, latencies)
        if pending:
            batch, pending = pending, []
            _score_batch(detector, batch, sinks, counts, latencies)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()


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
    ``interrupted=True``. Other errors propagate after the sinks and the source are closed.
    """
    options = options or StreamOptions()
    for sink in sinks:
        if getattr(sink, "threshold", 0.0) is None:
            sink.threshold = detector.threshold  # type: ignore[attr-defined]
    counts = _Counts(AlarmFilter(options.alarm_frames))
    latencies = _Latencies(options.latency_window)
    interrupted = False
    start = time.perf_counter()
    try:
        with _sigterm_interrupts(options.handle_sigterm):
            _pump(detector, source, sinks, options, counts, latencies)
    except KeyboardInterrupt as exc:
        interrupted = True
        counts.stopped_by = str(getattr(exc, "reason", "Ctrl-C (SIGINT)"))
    finally:
        wall = time.perf_counter() - start
        with _signals_ignored():
            _close_all(source, sinks)
    return StreamSummary(
        source=source.describe(),
        backend=str(getattr(detector, "backend_name", "")),
        threshold=float(detector.threshold),
        batch=1 if source.live else options.batch,
        frames_read=counts.delivered + source.skipped,
        frames_scored=counts.scored,
        frames_skipped=source.skipped,
        frames_dropped=source.dropped,
        frames_unscored=counts.delivered - counts.scored,
        anomalies=counts.anomalies,
        alarms=counts.alarm.raised,
        alarm_frames=options.alarm_frames,
        wall_s=wall,
        fps=counts.scored / wall if wall > 0 else 0.0,
        latency_ms=latencies.percentiles(),
        interrupted=interrupted,
        stopped_by=counts.stopped_by,
    )
