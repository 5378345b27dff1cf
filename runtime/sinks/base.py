"""What a sink is: it receives every scored frame in order (:class:`Sink`), and, if it
records them, the stream's events (:class:`EventSink`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from adedge.runtime.detector import FrameScore
from adedge.runtime.records import StreamEvent
from adedge.runtime.sources import Frame

Log = Callable[[str], None]


@runtime_checkable
class Sink(Protocol):
    """Receives every scored frame in order; ``close`` is always called once at the end.

    A sink with a ``threshold`` attribute left at None gets the detector's threshold from
    :func:`adedge.runtime.stream.run_stream` before the first frame.
    """

    def write(self, frame: Frame, result: FrameScore) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class EventSink(Protocol):
    """A sink that also records the stream's events (:mod:`adedge.runtime.records`), in
    order with its frames."""

    def event(self, event: StreamEvent) -> None: ...
