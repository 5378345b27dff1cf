"""The service's answers to the web console and its API (the :class:`ConsoleView` methods),
kept apart from starting and stopping the parts (``service.py``).

Run-time changes (a threshold, the detection switch, an alarm rule) go through
:meth:`ConsoleMethods.update_camera` whether they come from the API or MQTT, so every one
is applied to the running camera, reported on MQTT and written to ``settings.json``.
"""

from __future__ import annotations

import platform
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from adedge import __version__
from adedge.runtime.serve.api_types import (
    API_VERSION,
    CameraInfo,
    CameraPatch,
    LiveFrame,
    ModelInfo,
    NotFound,
    Refused,
    Rule,
    ScoreHistory,
    VersionInfo,
)
from adedge.runtime.serve.config import AlarmRule, redacted
from adedge.runtime.serve.event_types import ThresholdSource
from adedge.runtime.serve.swap import CheckFrame
from adedge.uri import redact_url

if TYPE_CHECKING:
    from adedge.runtime.serve.camera import Camera
    from adedge.runtime.serve.config import ServeConfig
    from adedge.runtime.serve.model_pool import ModelPool
    from adedge.runtime.serve.settings import RuntimeSettings


class ConsoleMethods:
    """Mixed into :class:`~adedge.runtime.serve.service.Service`."""

    node: str
    config: ServeConfig
    cameras: dict[str, Camera]
    models: ModelPool
    settings: RuntimeSettings

    def log(self, line: str) -> None: ...

    # --- cameras --------------------------------------------------------------------------
    def _camera(self, name: str) -> Camera:
        camera = self.cameras.get(name)
        if camera is None:
            known = ", ".join(sorted(self.cameras)) or "none"
            raise NotFound(f"no camera '{name}'", f"the cameras are: {known}")
        return camera

    def cameras_info(self) -> list[CameraInfo]:
        return [self._info(camera) for camera in list(self.cameras.values())]

    def camera_info(self, name: str) -> CameraInfo:
        return self._info(self._camera(name))

    def _info(self, camera: Camera) -> CameraInfo:
        stats = camera.stats().to_dict()
        threshold, source = camera.threshold
        detector = camera.engine.detector
        rule = camera.recorder.lifecycle.rule
        return CameraInfo(
            **{key: stats[key] for key in _STATS_FIELDS},
            source=redact_url(camera.config.source),
            enabled=camera.config.enabled,
            threshold=threshold if threshold == threshold else None,
            threshold_source=source.value,
            card_threshold=None if detector is None else detector.threshold,
            alarm_rule=Rule(**rule.model_dump()),
            fps_cap=camera.config.fps,
            has_heatmap=bool(detector is not None and detector.has_maps),
        )

    def update_camera(self, name: str, patch: CameraPatch) -> CameraInfo:
        """Apply ``patch`` to the running camera and keep it in ``settings.json``."""
        camera = self._camera(name)
        kept = self.settings.camera(name)
        rule = camera.recorder.lifecycle.rule
        if patch.alarm is not None:
            changes = patch.alarm.model_dump(exclude_none=True)
            try:
                rule = AlarmRule(**{**rule.model_dump(), **changes})
            except ValueError as error:
                raise Refused(f"alarm rule refused: {_first_error(error)}", "keep k <= n") from None
            kept.alarm = rule
        if patch.threshold is not None and patch.clear_threshold:
            raise Refused("threshold and clear_threshold together", "send one of them")
        if patch.detect is not None:
            camera.set_detect(patch.detect)
            kept.detect = patch.detect
        if patch.alarm is not None:
            camera.set_rule(rule)
        if patch.threshold is not None:
            camera.set_threshold(patch.threshold)
            kept.threshold = patch.threshold
        elif patch.clear_threshold:
            camera.clear_threshold()
            kept.threshold = None
        self.settings.save(name, kept)
        self.log(f"camera {name}: {_describe(patch)}")
        return self._info(camera)

    def apply_settings(self, camera: Camera) -> None:
        """Lay the kept run-time settings over a camera built from the config."""
        kept = self.settings.camera(camera.name)
        if kept.detect is not None:
            camera.detect = kept.detect
        if kept.threshold is not None:
            camera.threshold_override = (kept.threshold, ThresholdSource.RUNTIME)
        if kept.alarm is not None:
            camera.set_rule(kept.alarm)

    def live_frame(self, name: str) -> LiveFrame | None:
        return self._camera(name).live.latest()

    def score_history(self, name: str, since: float | None = None) -> ScoreHistory:
        camera = self._camera(name)
        threshold = camera.threshold[0]
        return ScoreHistory(
            camera=name,
            threshold=threshold if threshold == threshold else None,
            points=camera.live.history(since),
        )

    def recent_frames(self, model: str) -> list[CheckFrame]:
        """The newest scored frame of each camera of ``model`` (a swap's check)."""
        frames = []
        for camera in list(self.cameras.values()):
            if camera.config.model != model:
                continue
            latest = camera.live.latest()
            if latest is not None:
                image = np.ascontiguousarray(latest.image)
                frames.append(CheckFrame(camera.name, image, latest.score))
        return frames

    # --- models, node ----------------------------------------------------------------------
    def models_info(self) -> list[ModelInfo]:
        return self.models.info({c: cfg.model for c, cfg in self.config.cameras.items()})

    def version_info(self) -> VersionInfo:
        return VersionInfo(
            adedge=__version__,
            api=API_VERSION,
            node=self.node,
            python=platform.python_version(),
            onnxruntime=_module_version("onnxruntime"),
            numpy=np.__version__,
            opencv=_module_version("cv2"),
        )

    def redacted_config(self) -> dict[str, Any]:
        data = redacted(self.config)
        for camera in data.get("cameras", {}).values():
            camera["source"] = redact_url(camera["source"])
        return data


_STATS_FIELDS = (
    "name",
    "model",
    "state",
    "error",
    "detect",
    "alarm",
    "input_fps",
    "scored_fps",
    "frames_read",
    "frames_scored",
    "drops",
    "latency_p50_ms",
    "latency_p99_ms",
    "latest_score",
    "events_total",
)


def _module_version(name: str) -> str | None:
    module = sys.modules.get(name)
    if module is None:
        try:
            module = __import__(name)
        except ImportError:
            return None
    return getattr(module, "__version__", None)


def _first_error(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        message = str(first.get("msg", error)).removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    return str(error)


def _describe(patch: CameraPatch) -> str:
    parts = []
    if patch.detect is not None:
        parts.append(f"detection {'on' if patch.detect else 'off'}")
    if patch.threshold is not None:
        parts.append(f"threshold {patch.threshold:g}")
    if patch.clear_threshold:
        parts.append("threshold back to the config's")
    if patch.alarm is not None:
        parts.append(f"alarm rule {patch.alarm.model_dump(exclude_none=True)}")
    return ", ".join(parts) or "nothing changed"
