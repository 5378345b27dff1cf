"""The contract between the HTTP API (routers, the web console) and the running service.

The routers read and steer the service only through :class:`ConsoleView` (the
:class:`~adedge.runtime.serve.service.Service` implements it), and answer with the pydantic
models below, so the OpenAPI page at ``/docs`` documents every body the console reads. A
router never reaches into cameras or engines: a refusal comes back as one of the errors at
the end of this module, which the app turns into ``{"detail": "<one line>"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adedge.errors import AdedgeError
from adedge.runtime.serve.stats import ServiceView

if TYPE_CHECKING:
    from adedge.runtime.regions import Region
    from adedge.runtime.serve.config import ServeConfig
    from adedge.runtime.serve.store import EventStore

API_VERSION = 1  # bumped when a response shape changes incompatibly


class Body(BaseModel):
    """Request bodies refuse keys they do not know, as the config file does."""

    model_config = ConfigDict(extra="forbid")


# --- cameras ---------------------------------------------------------------------------


class RulePatch(Body):
    """Part of an alarm rule; keys left out keep their value."""

    k: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1)
    cooldown_s: float | None = Field(None, ge=0)
    hysteresis: float | None = Field(None, ge=0)


class CameraPatch(Body):
    """``PATCH /api/cameras/{cam}``: what an operator may change at run time. Every change is
    kept in the store's ``settings.json`` and outlives a restart. ``threshold: null`` goes
    back to the config's (or the card's) threshold."""

    detect: bool | None = None
    threshold: float | None = Field(None, allow_inf_nan=False)
    alarm: RulePatch | None = None
    clear_threshold: bool = False  # true: forget a runtime threshold


class Rule(BaseModel):
    k: int
    n: int
    cooldown_s: float
    hysteresis: float


class CameraInfo(BaseModel):
    """One camera as the console shows it: its stats (``/api/stats``' fields) and settings."""

    name: str
    model: str
    source: str  # credentials in the URI replaced by ***
    enabled: bool
    state: str
    error: str | None
    detect: bool
    threshold: float | None
    threshold_source: str  # card | config | runtime
    card_threshold: float | None
    alarm_rule: Rule
    alarm: bool  # an event is open now
    fps_cap: float | None
    input_fps: float
    scored_fps: float
    frames_read: int
    frames_scored: int
    drops: dict[str, int]
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latest_score: float | None
    events_total: int
    has_heatmap: bool  # the model gives heatmaps (overlay, snapshots)


@dataclass(frozen=True, slots=True)
class LiveFrame:
    """The newest scored frame of a camera (shared, read-only: copy before drawing)."""

    seq: int  # counts scored frames: a new seq is a new frame
    wall: float
    image: np.ndarray  # BGR or grey uint8, as read
    amap: np.ndarray | None  # float32 HxW in frame pixels, or None
    score: float
    threshold: float
    alarm: bool
    # pixel decisions: the regions to outline instead of the heatmap (None: the card has none)
    regions: list[Region] | None = None


class ScorePoint(BaseModel):
    t: float  # Unix seconds
    score: float
    alarm: bool  # an event was open when this frame was scored


class ScoreHistory(BaseModel):
    """Recent scores of a camera, oldest first (the sparkline, the histogram)."""

    camera: str
    threshold: float | None
    points: list[ScorePoint]


# --- models ----------------------------------------------------------------------------


class ModelInfo(BaseModel):
    """One model: its bundle now, what scored with it and how many times it was swapped."""

    name: str
    bundle: str
    method: str | None
    sha256: str | None  # of the bundle's card
    backend: str
    state: str
    cameras: list[str]
    card_threshold: float | None
    generation: int  # 1 at start, +1 per swap
    loaded_at: float | None  # Unix seconds
    watch: bool
    queue_depth: int
    batches: int
    frames: int
    mean_batch_rows: float | None
    error: str | None


class LoadRequest(Body):
    """``POST /api/models/{name}/load``: a bundle folder on the service's machine."""

    bundle: Path


class ParityFrame(BaseModel):
    camera: str
    old_score: float | None
    new_score: float


class SwapReport(BaseModel):
    """What a model swap checked and did."""

    model: str
    old_bundle: str
    new_bundle: str
    old_sha256: str | None
    new_sha256: str
    generation: int
    frames_checked: list[ParityFrame]
    same_graphs: bool  # identical graphs: the new scores had to equal the old ones
    max_abs_diff: float | None
    new_threshold: float
    decisions_changed: int  # checked frames on the other side of the threshold now
    swapped_at: float


# --- config ----------------------------------------------------------------------------


class ReloadReport(BaseModel):
    """``POST /api/config/reload``: what the new config changed at once, and what waits for
    a restart (the node id, MQTT, webhooks, the API itself, storage)."""

    applied: list[str]
    restart_required: list[str]


class VersionInfo(BaseModel):
    adedge: str
    api: int
    node: str
    python: str
    onnxruntime: str | None
    numpy: str
    opencv: str | None


# --- events ----------------------------------------------------------------------------


class EventLabel(str, Enum):
    """A reviewer's verdict on an event (``POST /api/events/{id}/label``)."""

    TRUE_ANOMALY = "true_anomaly"
    FALSE_POSITIVE = "false_positive"
    UNSURE = "unsure"


class LabelRequest(Body):
    label: EventLabel | None  # null clears the label


# --- errors the routers turn into HTTP answers -----------------------------------------


class NotFound(AdedgeError):
    """404: no such camera, model or event."""


class Refused(AdedgeError):
    """409: the request is understood and cannot be done now (a model swap whose check
    failed, a config that does not validate, deleting an event still in progress)."""


# --- what the routers may ask the service ---------------------------------------------


class ConsoleView(ServiceView, Protocol):
    """The running service as the API and the console see it (beyond ServiceView)."""

    config: ServeConfig
    store: EventStore

    def cameras_info(self) -> list[CameraInfo]: ...

    def camera_info(self, name: str) -> CameraInfo:
        """Raises NotFound."""
        ...

    def update_camera(self, name: str, patch: CameraPatch) -> CameraInfo:
        """Apply and persist ``patch``; raises NotFound, Refused (e.g. k > n)."""
        ...

    def live_frame(self, name: str) -> LiveFrame | None:
        """The camera's newest scored frame (None before the first); raises NotFound."""
        ...

    def score_history(self, name: str, since: float | None = None) -> ScoreHistory:
        """Recent scores (after Unix time ``since``, else all kept); raises NotFound."""
        ...

    def models_info(self) -> list[ModelInfo]: ...

    def load_model(self, name: str, bundle: Path) -> SwapReport:
        """Load, check and swap (see ``swap.py``); raises NotFound, Refused."""
        ...

    def reload_config(self) -> ReloadReport:
        """Re-read the config file; raises Refused (bad config, started without a file)."""
        ...

    def version_info(self) -> VersionInfo: ...

    def redacted_config(self) -> dict[str, Any]: ...
