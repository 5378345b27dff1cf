"""What the service says about an anomaly: an :class:`Event` (one per alarm, from its first
frame to the end of its cooldown) and the messages that announce it (``new``, ``update``
when its peak rises, ``end``).

Every message carries the event's ``id`` and a ``seq`` that counts the event's messages
from 0, so a consumer of an at-least-once channel (MQTT QoS 1, webhooks with retries)
drops a repeat by (id, seq). The message is the event's JSON with ``type`` and ``seq``
added: one flat object, the same on MQTT, webhooks and in the store's outbox.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from adedge.runtime.records import iso_time


class MessageType(str, Enum):
    NEW = "new"
    UPDATE = "update"
    END = "end"


class EndReason(str, Enum):
    """Why an event ended: the score stayed low for the cooldown (``normal``), the service
    stopped (``shutdown``), the camera went away (``camera_lost``), a file or folder
    reached its end (``source_ended``), or the process died with the event open and the
    next start closed it (``interrupted``)."""

    NORMAL = "normal"
    SHUTDOWN = "shutdown"
    CAMERA_LOST = "camera_lost"
    SOURCE_ENDED = "source_ended"
    INTERRUPTED = "interrupted"


class ThresholdSource(str, Enum):
    """Where a camera's threshold comes from: the bundle's card, the camera's config, or a
    change at run time (MQTT ``threshold/set``)."""

    CARD = "card"
    CONFIG = "config"
    RUNTIME = "runtime"


class MediaKind(str, Enum):
    """The evidence files of an event (under the store's media folder)."""

    SNAPSHOT = "snapshot"  # JPEG: peak frame, heatmap overlay, defect outlined
    FRAME = "frame"  # JPEG: the raw peak frame
    HEATMAP = "heatmap"  # PNG: the peak frame's heatmap (16-bit, its own min..max)
    CLIP = "clip"  # MP4: pre-roll .. post-roll
    TRACE = "trace"  # JSON: the scores from the event's start to its end (a ScoreHistory)


@dataclass(frozen=True)
class ModelRef:
    """Which model scored an event: its name in the config, bundle sha256 and backend."""

    name: str
    sha256: str
    backend: str


@dataclass(frozen=True)
class Box:
    """The hottest heatmap region of the peak frame, in frame pixels."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class EventRegion:
    """A region of the peak frame's heatmap above the card's pixel threshold, larger than
    its minimum area: ``area`` in frame pixels and its bounding ``box``."""

    area: int
    box: Box


@dataclass
class Event:
    """One anomaly event. Times are Unix seconds; ``to_dict`` writes them as ISO-8601.

    ``regions``: the peak frame's regions above the pixel threshold, largest first (None:
    the model makes no pixel decisions; events stored before them have none either).
    """

    id: str
    node: str
    camera: str
    model: ModelRef
    start: float
    peak_score: float
    peak_time: float
    threshold: float
    threshold_source: ThresholdSource
    end: float | None = None
    end_reason: EndReason | None = None
    frames: int = 0  # scored frames from start to end
    box: Box | None = None
    media: dict[MediaKind, str] = field(default_factory=dict)  # kind -> path under media/
    media_pruned: bool = False
    labels: dict[str, str] = field(default_factory=dict)  # the node's labels
    regions: list[EventRegion] | None = None

    @staticmethod
    def new_id(camera: str, start: float) -> str:
        """Sortable by start time, unique across restarts: ``<ms>-<camera>-<random>``."""
        return f"{int(start * 1000):013d}-{camera}-{secrets.token_hex(3)}"

    @property
    def in_progress(self) -> bool:
        return self.end is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["start"] = iso_time(self.start)
        data["end"] = None if self.end is None else iso_time(self.end)
        data["peak_time"] = iso_time(self.peak_time)
        data["peak_score"] = _finite(self.peak_score)
        data["threshold_source"] = self.threshold_source.value
        data["end_reason"] = None if self.end_reason is None else self.end_reason.value
        data["media"] = {kind.value: path for kind, path in self.media.items()}
        data["duration_s"] = None if self.end is None else round(self.end - self.start, 3)
        return data

    def message(self, kind: MessageType, seq: int) -> dict[str, Any]:
        """The message announcing this event's state (see the module docstring)."""
        return {"type": kind.value, "seq": seq, **self.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        """Inverse of :meth:`to_dict` (the store keeps events as this JSON)."""
        from datetime import datetime

        def unix(text: str | None) -> float | None:
            return None if text is None else datetime.fromisoformat(text).timestamp()

        box = data.get("box")
        regions = data.get("regions")
        return cls(
            id=data["id"],
            node=data["node"],
            camera=data["camera"],
            model=ModelRef(**data["model"]),
            start=unix(data["start"]) or 0.0,
            peak_score=math.nan if data["peak_score"] is None else float(data["peak_score"]),
            peak_time=unix(data["peak_time"]) or 0.0,
            threshold=float(data["threshold"]),
            threshold_source=ThresholdSource(data["threshold_source"]),
            end=unix(data.get("end")),
            end_reason=None if data.get("end_reason") is None else EndReason(data["end_reason"]),
            frames=int(data.get("frames", 0)),
            box=None if box is None else Box(**box),
            media={MediaKind(k): v for k, v in (data.get("media") or {}).items()},
            media_pruned=bool(data.get("media_pruned", False)),
            labels=dict(data.get("labels") or {}),
            regions=None
            if regions is None
            else [EventRegion(int(r["area"]), Box(**r["box"])) for r in regions],
        )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def encode(message: dict[str, Any]) -> str:
    """A message as compact JSON (what MQTT and webhooks carry)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def now() -> float:
    return time.time()
