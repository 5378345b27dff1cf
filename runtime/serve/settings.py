"""What operators changed at run time, kept across restarts: ``<storage>/settings.json``.

A threshold, the detection switch or an alarm rule set through the API (or MQTT
``threshold/set``), and a model's bundle loaded through the API, are written here at once
(atomically: a crash leaves the old file or the new one) and laid over the config at every
start, so a restart does not quietly undo a line's tuning. The console shows where each
value comes from (``threshold_source``); a ``PATCH`` with ``clear_threshold`` goes back to
the config's value, and editing a model's bundle in the config file wins over a bundle
loaded at run time.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adedge.atomic import write_text
from adedge.errors import AdedgeError
from adedge.runtime.serve.config import AlarmRule

SETTINGS_NAME = "settings.json"


class CameraSettings(BaseModel):
    """One camera's run-time values; None: the config's."""

    model_config = ConfigDict(extra="forbid")

    detect: bool | None = None
    threshold: float | None = Field(None, allow_inf_nan=False)
    alarm: AlarmRule | None = None


class ModelSettings(BaseModel):
    """A bundle loaded at run time in place of the config's."""

    model_config = ConfigDict(extra="forbid")

    bundle: Path
    config_bundle: Path  # the config's bundle when it was loaded: a config edit wins


class SettingsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    cameras: dict[str, CameraSettings] = Field(default_factory=dict)
    models: dict[str, ModelSettings] = Field(default_factory=dict)


class RuntimeSettings:
    """The settings file of one store folder; thread-safe."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / SETTINGS_NAME
        self._lock = threading.Lock()
        self._data = self._read()

    def _read(self) -> SettingsFile:
        if not self.path.exists():
            return SettingsFile()
        try:
            return SettingsFile.model_validate(json.loads(self.path.read_text("utf-8")))
        except (OSError, ValueError, ValidationError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not a settings file"
            raise AdedgeError(
                f"{self.path} cannot be read ({reason})",
                "fix it, or delete it to go back to the config's thresholds and rules",
            ) from None

    def camera(self, name: str) -> CameraSettings:
        with self._lock:
            return self._data.cameras.get(name, CameraSettings()).model_copy()

    def save(self, name: str, settings: CameraSettings) -> None:
        """Replace camera ``name``'s settings and write the file."""
        with self._lock:
            if settings == CameraSettings():
                self._data.cameras.pop(name, None)
            else:
                self._data.cameras[name] = settings
            self._write()

    def model_bundle(self, name: str, config_bundle: Path) -> Path | None:
        """The bundle loaded at run time for model ``name``, unless the config's bundle has
        changed since (then the config is the newer intent and the entry is forgotten)."""
        with self._lock:
            entry = self._data.models.get(name)
            if entry is None:
                return None
            if Path(entry.config_bundle) != Path(config_bundle):
                del self._data.models[name]
                self._write()
                return None
            return Path(entry.bundle)

    def save_model(self, name: str, bundle: Path | None, config_bundle: Path) -> None:
        """Remember (or with None forget) the bundle loaded for model ``name``."""
        with self._lock:
            if bundle is None or Path(bundle) == Path(config_bundle):
                self._data.models.pop(name, None)
            else:
                self._data.models[name] = ModelSettings(bundle=bundle, config_bundle=config_bundle)
            self._write()

    def _write(self) -> None:
        write_text(self.path, self._data.model_dump_json(indent=2, exclude_none=True) + "\n")
