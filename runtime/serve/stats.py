"""What the service reports about itself: each camera's and each model's state and
counters, as typed snapshots that ``/api/stats``, ``/metrics`` and ``/api/health/ready``
read (and the web console will). The service fills them; readers never reach into it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Protocol


class CameraState(str, Enum):
    """``starting``: not yet a frame; ``online``: frames arrive; ``offline``: the source
    stopped delivering and is being reopened with back-off; ``error``: it cannot run (its
    model failed to load, its source cannot be opened at all); ``disabled`` in the config;
    ``ended``: a file source reached its end."""

    STARTING = "starting"
    ONLINE = "online"
    OFFLINE = "offline"
    ERROR = "error"
    DISABLED = "disabled"
    ENDED = "ended"


class DropReason(str, Enum):
    """Why a frame was read but not scored: the live source had a newer one (``stale``),
    the fps cap (``fps_cap``), the engine's queue was full (``busy``), detection was off
    (``detect_off``), or the frame could not be decoded (``decode``)."""

    STALE = "stale"
    FPS_CAP = "fps_cap"
    BUSY = "busy"
    DETECT_OFF = "detect_off"
    DECODE = "decode"


class ModelState(str, Enum):
    LOADING = "loading"
    READY = "ready"
    ERROR = "error"


@dataclass
class CameraStats:
    """One camera now. Rates are frames per second over the last few seconds; latency is
    from the frame read to its score, over the most recent frames."""

    name: str
    model: str
    state: CameraState
    detect: bool
    threshold: float | None
    alarm: bool = False
    input_fps: float = 0.0
    scored_fps: float = 0.0
    frames_read: int = 0
    frames_scored: int = 0
    drops: dict[DropReason, int] = field(default_factory=dict)
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    reconnects: int = 0
    latest_score: float | None = None
    events_total: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["drops"] = {reason.value: count for reason, count in self.drops.items()}
        return data


@dataclass
class ModelStats:
    """One shared engine: its bundle, state, and the batches it ran."""

    name: str
    bundle: str
    sha256: str | None
    backend: str
    state: ModelState
    cameras: list[str]
    queue_depth: int = 0
    batches: int = 0
    frames: int = 0
    mean_batch_rows: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data


@dataclass
class StorageStats:
    path: str
    media_bytes: int
    max_bytes: int
    free_bytes: int
    events: int
    outbox: dict[str, int]  # channel -> messages waiting

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ServiceView(Protocol):
    """What the HTTP layer may ask the running service."""

    node: str
    started: float

    def camera_stats(self) -> list[CameraStats]: ...

    def model_stats(self) -> list[ModelStats]: ...

    def storage_stats(self) -> StorageStats: ...

    def not_ready(self) -> list[str]:
        """Why the service is not ready (empty: ready): every enabled camera must have
        produced a frame and every model loaded."""
        ...
