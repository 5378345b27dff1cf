"""What a stream records: one JSON object per scored frame, and one per event.

The JSONL log (``--jsonl``) is a sequence of records, each with a ``type``:

* ``start``: the stream began (source, model, method, backend, threshold, adedge version;
  with pixel decisions the pixel threshold, and a ``--min-area`` override);
* ``frame``: one scored frame (index, score, label, alarm state, threshold, latencies,
  truth where known; with pixel decisions, ``regions``: ``[{area, box: [x, y, w, h]}]``,
  the heatmap's regions above the pixel threshold larger than the minimum area);
* ``alarm_start`` / ``alarm_end``: the stream's alarm rule (``--alarm-frames K``) switched
  on at a frame, or off again (with how many frames and seconds it lasted and its peak);
* ``gap_start`` / ``reconnect`` / ``gap_end``: a live source stopped delivering frames, each
  attempt to reopen it, and its return (or the end of the stream during the gap);
* ``skipped``: an input that could not be scored (an unreadable image file, a corrupt video
  frame), with the reason;
* ``end``: the stream ended (what ended it, frames scored, anomalies, alarms).

Every record has ``time``, the wall clock as ISO-8601 with milliseconds and the UTC offset.
Frame-bound records also carry ``source_time``, the seconds on the source's own clock (the
position in a video file, the stream's own timestamps for a live source where it has them,
else the seconds since the source opened): the same two fields for files and live sources.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # records are written by sinks and raised by sources: no import cycle
    from adedge.runtime.detector import FrameScore
    from adedge.runtime.sources import Frame


def iso_time(wall: float) -> str:
    """Unix time as ISO-8601 in UTC with milliseconds: ``2026-11-29T12:00:00.123+00:00``.
    Never later than ``wall``: ``fromtimestamp`` rounds to the microsecond, which can carry
    into the next millisecond (x.6959996 -> x.696), and a time window ``after=<this text>``
    must still hold the moment it names."""
    moment = datetime.fromtimestamp(wall, timezone.utc)
    if moment.timestamp() > wall:
        moment -= timedelta(microseconds=1)
    return moment.isoformat(timespec="milliseconds")


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN/Infinity: a broken value becomes null rather than an invalid line."""
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class StreamEvent:
    """Something that happened in a stream other than a scored frame.

    Subclasses are the record types; their fields are the record's fields (``wall``
    becomes ``time``). ``message`` is the one line the console prints for it.
    """

    kind: ClassVar[str] = "event"
    wall: float = field(default_factory=time.time, kw_only=True)

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"type": self.kind, "time": iso_time(self.wall)}
        for item in fields(self):
            if item.name == "wall":
                continue
            value = getattr(self, item.name)
            if isinstance(value, float):
                value = finite_or_none(round(value, 6))
            if value is not None:
                record[item.name] = value
        return record

    def message(self) -> str:
        return self.kind


@dataclass(frozen=True)
class StreamStarted(StreamEvent):
    kind: ClassVar[str] = "start"
    source: str
    model: str
    method: str
    backend: str
    threshold: float
    adedge_version: str
    pixel_threshold: float | None = None  # with pixel decisions: the card's pixel threshold
    min_area: float | None = None  # a --min-area override (None: the card's, scaled)

    def message(self) -> str:
        return f"streaming {self.source} through {self.model} ({self.method}, {self.backend})"


@dataclass(frozen=True)
class StreamEnded(StreamEvent):
    kind: ClassVar[str] = "end"
    stopped_by: str
    frames_scored: int
    anomalies: int
    alarms: int

    def message(self) -> str:
        return f"stream ended by {self.stopped_by}: {self.frames_scored} frames scored"


@dataclass(frozen=True)
class FrameSkipped(StreamEvent):
    """An input that could not be scored: ``name`` is the file (or the source), ``position``
    its place in the source, ``reason`` why."""

    kind: ClassVar[str] = "skipped"
    name: str
    reason: str
    position: int | None = None

    def message(self) -> str:
        where = "" if self.position is None else f" (position {self.position})"
        return f"skipped {self.name}{where}: {self.reason}"


@dataclass(frozen=True)
class GapStarted(StreamEvent):
    """A live source stopped delivering frames; ``after_frame`` is its last frame's index."""

    kind: ClassVar[str] = "gap_start"
    source: str
    after_frame: int | None = None

    def message(self) -> str:
        return f"{self.source}: no frames (source dropped); reopening it"


@dataclass(frozen=True)
class Reconnect(StreamEvent):
    """One attempt to reopen a live source during a gap."""

    kind: ClassVar[str] = "reconnect"
    source: str
    attempt: int
    opened: bool
    next_try_s: float | None = None

    def message(self) -> str:
        if self.opened:
            return f"{self.source}: reopened (attempt {self.attempt}), waiting for frames"
        more = "" if self.next_try_s is None else f", next try in {self.next_try_s:.1f} s"
        return f"{self.source}: reopen attempt {self.attempt} failed{more}"


@dataclass(frozen=True)
class GapEnded(StreamEvent):
    """The end of a gap: frames came back (``recovered``) or the stream ended during it."""

    kind: ClassVar[str] = "gap_end"
    source: str
    seconds: float
    reopens: int
    recovered: bool

    def message(self) -> str:
        if self.recovered:
            return (
                f"{self.source}: frames are back after {self.seconds:.1f} s "
                f"({self.reopens} reopen attempt{'s' * (self.reopens != 1)})"
            )
        return f"{self.source}: gave up after {self.seconds:.1f} s and {self.reopens} attempts"


@dataclass(frozen=True)
class AlarmStarted(StreamEvent):
    kind: ClassVar[str] = "alarm_start"
    frame: int
    source_time: float
    score: float
    frames_needed: int

    def message(self) -> str:
        return f"ALARM on at frame {self.frame} (score {self.score:.4g})"


@dataclass(frozen=True)
class AlarmEnded(StreamEvent):
    """An alarm switched off at ``frame`` (the first normal frame, or the last frame when
    the stream ended during the alarm); ``frames`` it lasted, ``peak_score`` its maximum."""

    kind: ClassVar[str] = "alarm_end"
    frame: int
    source_time: float
    frames: int
    seconds: float
    peak_score: float
    reason: str = "normal frame"

    def message(self) -> str:
        return f"ALARM off at frame {self.frame} after {self.frames} frames ({self.reason})"


def frame_record(frame: Frame, result: FrameScore, threshold: float | None) -> dict[str, Any]:
    """The ``frame`` record of one scored frame."""
    record: dict[str, Any] = {
        "type": "frame",
        "frame": frame.index,
        "time": iso_time(frame.wall),
        "source_time": round(frame.timestamp, 6),
        "name": frame.name,
        "score": finite_or_none(float(result.score)),
        "anomalous": bool(result.anomalous),
        "threshold": threshold,
        "latency_ms": {k: round(float(v), 4) for k, v in result.latency_ms.items()},
    }
    if result.alarm is not None:  # the alarm rule's state at this frame
        record["alarm"] = bool(result.alarm)
    regions = getattr(result, "regions", None)
    if regions is not None:  # pixel decisions: the regions that made the frame anomalous
        record["regions"] = [region.to_dict() for region in regions]
    if frame.truth is not None:
        record["truth"] = bool(frame.truth)
    return record


@dataclass(frozen=True)
class StreamWarning(StreamEvent):
    """Something the user should look at that does not stop the stream."""

    kind: ClassVar[str] = "warning"
    text: str

    def message(self) -> str:
        return f"warning: {self.text}"
