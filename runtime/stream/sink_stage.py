"""The stream's output stage: a thread that hands results and events to every sink, in order."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Sequence

from adedge.runtime.alarms import AlarmTracker, FitWatch
from adedge.runtime.detector import FrameScore
from adedge.runtime.records import (
    StreamEvent,
)
from adedge.runtime.sinks import EventSink, Sink
from adedge.runtime.sources import Frame
from adedge.runtime.stream.inputs import POLL_S
from adedge.runtime.stream.summary import Latencies


class SinkStage:
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
        latencies: Latencies,
        fit: FitWatch | None = None,
    ) -> None:
        self.sinks, self.alarm, self.latencies, self.fit = sinks, alarm, latencies, fit
        self.recorders = [sink for sink in sinks if isinstance(sink, EventSink)]
        self.queue: queue.Queue[tuple[Frame, FrameScore] | StreamEvent | None] = queue.Queue(
            maxsize=queue_size
        )
        self.written = 0  # results handed to the sinks (a sink may raise on one of them)
        self.anomalies = 0
        self.with_regions = 0  # frames with a heatmap region above the pixel threshold
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
        self.with_regions += bool(getattr(result, "regions", None))
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
