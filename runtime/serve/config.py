"""The service's configuration: a YAML file (``adedge serve --config adedge.yaml``) read into a
typed schema, Frigate-shaped: ``node``, ``models``, ``cameras``, ``mqtt``, ``webhooks``,
``api``, ``storage``.

Secrets stay out of the file and out of ``ps``: ``${NAME}`` anywhere in a value is replaced
by the environment variable ``NAME`` (``${NAME:-default}`` gives a default); a variable that
is not set is an error naming the key that asked for it. The HTTP API's tokens are not in
the file either: ``api.tokens`` names, for each, a file or an environment variable to read
it from at start. Every mistake is one line that names the key path:
``cameras.line3.alarm.k: must be >= 1``.
"""

from __future__ import annotations

import json
import math
import re
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adedge.errors import AdedgeError
from adedge.formats import BackendChoice, parse_backend
from adedge.runtime.serve.config_text import ConfigError, describe_validation, substitute_env

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # safe in an MQTT topic, a file name and a URL
DEFAULT_API_PORT = 5080
DEFAULT_MQTT_PORT = 1883


class Section(BaseModel):
    """Every section refuses keys it does not know: a typo is an error, not a default."""

    model_config = ConfigDict(extra="forbid")


class NodeConfig(Section):
    """This box: ``id`` names it in MQTT topics and events; ``labels`` travel with events."""

    id: str = Field("adedge", pattern=NAME)
    labels: dict[str, str] = Field(default_factory=dict)


class Fallback(str, Enum):
    """What a model served by Triton does while the server is unreachable: its frames fail
    (``none``: the cameras go to error and recover with the server) or run the same bundle
    on this box (``local``)."""

    NONE = "none"
    LOCAL = "local"


class ModelConfig(Section):
    """One bundle and how it runs; one engine per model is shared by all its cameras.

    With ``backend: triton://HOST:8001/<bundle>_<stage>`` (or ``triton+http://``) the stages
    run on a Triton server and the card comes from it; ``bundle`` is then the local fallback
    and is given only with ``fallback: local``.

    ``max_batch`` (batch rows: frames, or tiles of tiled stages) and ``max_delay_ms`` (how
    long a batch waits to fill) work as Triton's dynamic batcher does. The default holds
    four frames of 64 tiles: a smaller batch lets one tiled frame fill it alone, and the
    cameras are no longer batched together (measured in ``benchmarks/results/serve.md``).
    """

    bundle: Path | None = None  # required unless a triton backend runs without a fallback
    backend: str = "onnxruntime"
    fallback: Fallback = Fallback.NONE
    precision: str | None = None  # None: the backend's default (the bundle's own graph)
    threads: int = Field(0, ge=0)  # ONNX Runtime threads per stage; 0: every core
    max_batch: int = Field(256, ge=1, le=4096)  # rows: a 64-tile frame is 64
    max_delay_ms: float = Field(5.0, ge=0, le=10_000)
    # swap in a new version, checked as an API load is: the bundle when its folder changes
    # on disk; a Triton model when the server's config carries a new card
    watch: bool = False

    @model_validator(mode="after")
    def _backend_known(self) -> ModelConfig:
        choice = _as_value_error(self.choice)
        if choice.remote is None:
            if self.bundle is None:
                raise ValueError("bundle: a bundle folder is required (or a triton backend)")
            if self.fallback is not Fallback.NONE:
                raise ValueError("fallback: only a triton backend has a fallback")
            return self
        if self.precision is not None:
            raise ValueError("precision: a Triton model runs in the precision it was exported in")
        if self.fallback is Fallback.LOCAL and self.watch:
            raise ValueError(
                "watch: a Triton model with a local fallback takes a new version by loading "
                "its bundle (POST /api/models/<name>/load), which must match the server's new "
                "card; watch: true is for Triton models without a fallback"
            )
        if self.fallback is Fallback.LOCAL and self.bundle is None:
            raise ValueError("bundle: fallback: local needs the bundle exported to Triton")
        if self.fallback is Fallback.NONE and self.bundle is not None:
            raise ValueError(
                "bundle: with a triton backend the bundle is the local fallback; add "
                "fallback: local, or remove bundle"
            )
        return self

    @property
    def remote(self) -> bool:
        """Whether a Triton server runs this model."""
        return self.choice().remote is not None

    def choice(self) -> BackendChoice:
        spec = self.backend if self.precision is None else f"{self.backend}:{self.precision}"
        return parse_backend(spec)

    @property
    def backend_spec(self) -> str:
        """What :class:`~adedge.runtime.detector.Detector` takes as ``backend``."""
        return self.backend if self.precision is None else f"{self.backend}:{self.precision}"


class AlarmRule(Section):
    """An alarm fires when ``k`` of the last ``n`` scored frames are above the threshold; the
    event it opens ends once the score has stayed below threshold - ``hysteresis`` for
    ``cooldown_s`` seconds."""

    k: int = Field(3, ge=1)
    n: int = Field(5, ge=1)
    cooldown_s: float = Field(2.0, ge=0)
    hysteresis: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _k_within_n(self) -> AlarmRule:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must be <= n ({self.n})")
        return self


Point = tuple[float, float]


class EvidenceConfig(Section):
    """What an event keeps: a snapshot (peak frame with the heatmap and the defect outlined),
    the raw frame, the heatmap as PNG, and a clip from ``pre_s`` before the event to
    ``post_s`` after it."""

    snapshot: bool = True
    raw_frame: bool = True
    heatmap: bool = True
    clip: bool = True
    pre_s: float = Field(3.0, ge=0, le=60)
    post_s: float = Field(3.0, ge=0, le=60)
    clip_fps: float | None = Field(None, gt=0, le=120)  # None: the camera's scored rate
    jpeg_quality: int = Field(90, ge=10, le=100)
    # the pre-roll ring buffer's memory: an unpaced camera would fill pre_s x its rate
    pre_max_bytes: int = Field(128 * 1024**2, ge=1024**2)


class CameraConfig(Section):
    """One camera: its source (any URI ``adedge stream --source`` takes), its model (a name
    under ``models``), an fps cap, a threshold override, the alarm rule, masks (polygons in
    normalised 0..1 coordinates whose area is zeroed in the heatmap) and evidence."""

    source: str
    model: str
    enabled: bool = True
    detect: bool = True  # scoring on; off: frames are read and counted, nothing is scored
    fps: float | None = Field(None, gt=0, le=1000)
    resize: str | None = None  # WIDTHxHEIGHT
    loop: bool = False  # files and folders restart at their end
    threshold: float | None = None  # None: the bundle card's
    alarm: AlarmRule = Field(default_factory=AlarmRule)
    masks: list[list[Point]] = Field(default_factory=list)
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    jsonl: Path | None = None  # the per-frame JSONL log of ``adedge stream --jsonl``
    # pixel decisions (a card with a pixel threshold): off with pixel: false; min_area
    # overrides the card's minimum region area, in pixels of this camera's frames
    pixel: bool = True
    min_area: float | None = Field(None, ge=0)

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("masks")
    @classmethod
    def _polygons(cls, masks: list[list[Point]]) -> list[list[Point]]:
        for number, polygon in enumerate(masks):
            if len(polygon) < 3:
                raise ValueError(f"polygon {number} has {len(polygon)} points; needs 3 or more")
            for x, y in polygon:
                if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                    raise ValueError(
                        f"polygon {number} has point ({x}, {y}) outside 0..1 (normalised)"
                    )
        return masks

    @field_validator("resize")
    @classmethod
    def _resize(cls, value: str | None) -> str | None:
        if value is not None:
            from adedge.runtime.sources import parse_resize

            _as_value_error(lambda: parse_resize(value))
        return value

    def resize_size(self) -> tuple[int, int] | None:
        from adedge.runtime.sources import parse_resize

        return None if self.resize is None else parse_resize(self.resize)


class MqttConfig(Section):
    """The broker events go to; topics live under ``<topic_prefix>/<node id>/``."""

    host: str
    port: int = Field(DEFAULT_MQTT_PORT, ge=1, le=65535)
    username: str | None = None
    password: str | None = Field(None, repr=False)  # ${ENV}: never in the file
    client_id: str | None = None  # None: adedge-<node id>
    topic_prefix: str = Field("adedge", pattern=r"^[A-Za-z0-9_/-]+$")
    keepalive_s: int = Field(30, ge=5, le=3600)
    score_interval_s: float = Field(1.0, ge=0)  # <camera>/score at most this often
    tls: bool = False
    ca_file: Path | None = None


class WebhookConfig(Section):
    """An HTTP endpoint that receives every event message as a JSON POST."""

    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict, repr=False)  # ${ENV} for tokens
    timeout_s: float = Field(5.0, gt=0, le=120)
    backoff_s: float = Field(1.0, gt=0)
    backoff_cap_s: float = Field(60.0, gt=0)


class Scope(str, Enum):
    """What an API token may do: ``viewer`` reads (GET/HEAD), ``admin`` also changes things."""

    VIEWER = "viewer"
    ADMIN = "admin"


class TokenConfig(Section):
    """One bearer token of the HTTP API: a ``name`` (in logs and ``/api/auth/whoami``), its
    ``scope``, and where the token is: a ``file`` (read once at start) or an ``env``
    variable. The config names where the secret is, never the secret itself."""

    name: str = Field(pattern=NAME)
    scope: Scope
    file: Path | None = None
    env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _one_source(self) -> TokenConfig:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of 'file' (a path) or 'env' (a variable name)")
        return self


class TlsConfig(Section):
    """HTTPS: the PEM certificate (chain) and its private key; checked when the API starts."""

    cert: Path
    key: Path


class ApiConfig(Section):
    """The HTTP server: health, stats, metrics, the web console. 127.0.0.1 unless configured.

    Without ``tokens`` only this machine's own clients (loopback) are served, as admin; with
    them every request but health and the page's files needs one (see ``auth.py``)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_API_PORT, ge=0, le=65535)  # 0: any free port
    tokens: list[TokenConfig] = Field(default_factory=list)
    tls: TlsConfig | None = None

    @field_validator("tokens")
    @classmethod
    def _unique_names(cls, tokens: list[TokenConfig]) -> list[TokenConfig]:
        names = [token.name for token in tokens]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"token name '{repeated[0]}' is used twice; names must differ")
        return tokens


class StorageConfig(Section):
    """Where events and their media live: ``events.db`` (SQLite) and ``media/`` under
    ``path``. The media are capped at ``max_bytes`` and keep ``min_free_bytes`` free on the
    disk: the oldest evidence goes first; event rows stay and say their media was pruned."""

    path: Path = Path("adedge-data")
    max_bytes: int = Field(2 * 1024**3, ge=1024**2)
    min_free_bytes: int = Field(512 * 1024**2, ge=0)


class ServeConfig(Section):
    """The whole service: see the module docstring."""

    node: NodeConfig = Field(default_factory=NodeConfig)
    models: dict[str, ModelConfig]
    cameras: dict[str, CameraConfig]
    mqtt: MqttConfig | None = None
    webhooks: dict[str, WebhookConfig] = Field(default_factory=dict)
    api: ApiConfig = Field(default_factory=ApiConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)

    @model_validator(mode="after")
    def _references(self) -> ServeConfig:
        if not self.cameras:
            raise ValueError("no cameras: add one under 'cameras'")
        names = re.compile(NAME)
        for kind, table in (("model", self.models), ("camera", self.cameras)):
            for name in table:
                if not names.match(name):
                    raise ValueError(
                        f"{kind} name '{name}' must be letters, digits, '_', '.', '-' "
                        "(it names MQTT topics and files)"
                    )
        for name, camera in self.cameras.items():
            if camera.model not in self.models:
                known = ", ".join(sorted(self.models)) or "none"
                raise ValueError(
                    f"cameras.{name}.model: '{camera.model}' is not under 'models' (known: {known})"
                )
        return self

    def enabled_cameras(self) -> dict[str, CameraConfig]:
        return {name: cam for name, cam in self.cameras.items() if cam.enabled}


def _as_value_error(check: Any) -> Any:
    """Run ``check``; an AdedgeError becomes the ValueError pydantic reports with its key."""
    try:
        return check()
    except AdedgeError as error:
        raise ValueError(error.one_line().rstrip(".")) from None


def parse_config(data: Any, env: dict[str, str] | None = None) -> ServeConfig:
    """A ServeConfig from the parsed YAML; every problem a one-line ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError("the config is not a mapping of sections", "start with 'cameras:'")
    data = substitute_env(data, env=env)
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation(error), "fix that key and run --check") from None


def load_config(path: Path, env: dict[str, str] | None = None) -> ServeConfig:
    """Read and validate the YAML file at ``path``."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            f"cannot read config '{path}': {error.strerror or error}",
            "pass the path of an adedge.yaml (see adedge serve --print-schema)",
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"config '{path}'{where}: {problem}", "fix the YAML syntax") from None
    return parse_config(data, env)


def schema_json() -> str:
    """The JSON schema of the config file (``adedge serve --print-schema``)."""
    return json.dumps(ServeConfig.model_json_schema(), indent=2)


def redacted(config: ServeConfig) -> dict[str, Any]:
    """The config as JSON-ready data with secrets (passwords, webhook headers) hidden."""
    data = config.model_dump(mode="json")
    if data.get("mqtt") and data["mqtt"].get("password"):
        data["mqtt"]["password"] = "***"
    for hook in data.get("webhooks", {}).values():
        hook["headers"] = {name: "***" for name in hook.get("headers", {})}
    return data
