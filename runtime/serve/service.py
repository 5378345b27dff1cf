"""The running service: every part built from one :class:`ServeConfig` and started in the
order that loses nothing.

Start: the event store opens and closes the events a killed process left open (as
``interrupted``, their ``end`` queued like any other); the models load (one that fails
marks its cameras ``error``, the rest go on); MQTT and webhooks start delivering whatever
the outbox holds; the cameras start; the HTTP server starts last. Stop (SIGTERM, Ctrl-C):
the cameras stop first, so open events end as ``shutdown`` with their clips finished and
their ``end`` committed; the delivery channels get a short grace to flush the outbox (what
they cannot deliver stays there for the next start); then the engines, HTTP and the store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from adedge.runtime.serve.api_types import Refused, ReloadReport, SwapReport
from adedge.runtime.serve.camera import Camera
from adedge.runtime.serve.config import CameraConfig, ConfigError, ServeConfig, load_config
from adedge.runtime.serve.engine import SharedEngine
from adedge.runtime.serve.event_types import ModelRef
from adedge.runtime.serve.hub import Hub
from adedge.runtime.serve.metrics import ServiceMetrics
from adedge.runtime.serve.model_pool import ModelPool
from adedge.runtime.serve.reload import plan_reload
from adedge.runtime.serve.service_console import ConsoleMethods
from adedge.runtime.serve.settings import RuntimeSettings
from adedge.runtime.serve.stats import CameraStats, ModelState, ModelStats, StorageStats
from adedge.runtime.serve.store import EventStore

if TYPE_CHECKING:
    from adedge.runtime.serve.mqtt import ControlRequest
    from adedge.runtime.serve.tokens import TokenTable

Log = Callable[[str], None]
TICK_S = 1.0  # how often rates, queue depths and storage gauges are refreshed
FLUSH_GRACE_S = 3.0  # on stop: time the channels get to deliver what is queued
CAMERA_STOP_S = 15.0  # on stop: time the cameras get, together, to end events and clips
MQTT_CHANNEL = "mqtt"


def webhook_channel(name: str) -> str:
    return f"webhook:{name}"


def console_routers() -> list:
    """The web console's routers (imported here: FastAPI loads only when the API is on)."""
    from adedge.runtime.serve import api_cameras, api_config, api_console, api_events, api_models

    return [
        api_config.router,
        api_cameras.router,
        api_events.router,
        api_models.router,
        api_console.router,
    ]


class Service(ConsoleMethods):
    """``adedge serve`` (see the module docstring); also the HTTP layer's ConsoleView.
    ``config_path``: the file a config reload re-reads (None: reload is refused)."""

    def __init__(self, config: ServeConfig, log: Log, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.log = log  # type: ignore[method-assign]
        self.node = config.node.id
        self.started = time.time()
        self.metrics = ServiceMetrics()
        channels = [webhook_channel(name) for name in config.webhooks]
        if config.mqtt is not None:
            channels.insert(0, MQTT_CHANNEL)
        storage = config.storage
        self.store = EventStore(storage.path, channels, storage.max_bytes, storage.min_free_bytes)
        self.hub = Hub(self.store, self.metrics, log)
        try:
            self.settings = RuntimeSettings(self.store.root)
        except BaseException:
            self.store.close()
            raise
        self.models = ModelPool(config.models, self.settings, self.metrics, log, self.recent_frames)
        self.cameras: dict[str, Camera] = {}
        self._reload_lock = threading.Lock()
        self.mqtt = None
        self.webhooks: list = []
        self.api = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @property
    def engines(self) -> dict[str, SharedEngine]:
        return self.models.engines

    # --- life ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start every part (see the module docstring); returns once all are running."""
        tokens = None
        if self.config.api.enabled:  # a missing token file fails before anything starts
            from adedge.runtime.serve.http_api import check_tls
            from adedge.runtime.serve.tokens import load_tokens

            tokens = load_tokens(self.config.api)
            check_tls(self.config.api)
        closed = self.store.close_interrupted(time.time())
        if closed:
            self.log(f"closed {len(closed)} event(s) left open by the last run as interrupted")
        self.models.start()
        self._start_channels()
        for name, camera_config in self.config.cameras.items():
            self._add_camera(name, camera_config)
        self._start_api(tokens)
        self._ticker = threading.Thread(target=self._tick, name="serve-ticker", daemon=True)
        self._ticker.start()
        self.log(
            f"serving {len(self.cameras)} camera(s) with {len(self.engines)} model(s) "
            f"as node {self.node}; events in {self.store.root}"
        )

    def _add_camera(self, name: str, camera_config: CameraConfig) -> Camera:
        """Build camera ``name`` with its kept run-time settings and start it."""
        engine = self.engines[camera_config.model]
        engine.add_camera(name)
        self.metrics.camera_added(name, camera_config.model)
        ref = engine.ref or ModelRef(
            camera_config.model, "", self.config.models[camera_config.model].backend_spec
        )
        camera = Camera(
            name, camera_config, engine, self.hub, self.node, self.config.node.labels, ref
        )
        self.apply_settings(camera)
        self.cameras[name] = camera
        camera.start()
        return camera

    def _stop_camera(self, name: str) -> None:
        camera = self.cameras.pop(name)
        camera.stop()
        camera.join(CAMERA_STOP_S)
        if camera.running:
            self.log(f"camera {name} did not stop in {CAMERA_STOP_S:g} s; leaving it")
        camera.engine.remove_camera(name)
        self.metrics.camera_removed(name)

    def _start_channels(self) -> None:
        if self.config.mqtt is not None:
            from adedge.runtime.serve.mqtt import MqttLink

            self.mqtt = MqttLink(
                self.config.mqtt,
                self.node,
                self.store,
                list(self.config.cameras),
                self.control,
                self.log,
            )
            self.mqtt.start()
        for name, hook in self.config.webhooks.items():
            from adedge.runtime.serve.webhooks import WebhookSender

            sender = WebhookSender(name, hook, self.store, self.log)
            sender.start()
            self.webhooks.append(sender)
        channels = [*self.webhooks] + ([self.mqtt] if self.mqtt is not None else [])
        self.hub.attach(channels, self.mqtt)

    def _start_api(self, tokens: TokenTable | None) -> None:
        api = self.config.api
        if not api.enabled:
            return
        from adedge.runtime.serve.http_api import ApiServer, build_app

        self.api = ApiServer(
            build_app(self, self.metrics, console_routers(), log=self.log, tokens=tokens),
            api,
            self.log,
        )
        self.api.start()

    def stop(self) -> None:
        """Stop every part in the order that loses nothing (see the module docstring)."""
        self._stop.set()
        for camera in self.cameras.values():
            camera.stop()
        deadline = time.monotonic() + CAMERA_STOP_S
        for camera in self.cameras.values():
            camera.join(max(0.0, deadline - time.monotonic()))
            if camera.running:  # e.g. an RTSP open that FFmpeg has not given up yet
                self.log(f"camera {camera.name} did not stop in {CAMERA_STOP_S:g} s; leaving it")
        self._flush(FLUSH_GRACE_S)
        self.models.stop()
        if self.mqtt is not None:
            self.mqtt.stop()
        for sender in self.webhooks:
            sender.stop()
        if self.api is not None:
            self.api.stop()
        if self._ticker is not None:
            self._ticker.join()
        self.store.close()

    def _flush(self, grace: float) -> None:
        """Give the channels up to ``grace`` seconds to empty the outbox."""
        deadline = time.monotonic() + grace
        while self.store.outbox_depth() and time.monotonic() < deadline:
            for channel in self.hub.channels:
                channel.wake()
            time.sleep(0.05)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` is called (or ``timeout``); True if stopped."""
        return self._stop.wait(timeout)

    # --- control ------------------------------------------------------------------------
    def control(self, request: ControlRequest) -> None:
        """A control message (MQTT ``<camera>/threshold/set``, ``…/detect/set``)."""
        from adedge.runtime.serve.api_types import CameraPatch
        from adedge.runtime.serve.mqtt import ControlKind

        if request.camera not in self.cameras:
            return
        if request.what is ControlKind.THRESHOLD:  # the link checked it is a finite number
            self.update_camera(request.camera, CameraPatch(threshold=float(request.value)))
        elif request.what is ControlKind.DETECT:
            self.update_camera(request.camera, CameraPatch(detect=request.value == "on"))

    def load_model(self, name: str, bundle: Path) -> SwapReport:
        """Swap model ``name`` to ``bundle`` once it passes the checks (``swap.py``)."""
        with self._reload_lock:
            report = self.models.swap(name, bundle)
        self._restart_errored(name)
        return report

    def _restart_errored(self, model: str) -> None:
        """Cameras that stopped because their model had failed run again once it loads."""
        for name, camera in list(self.cameras.items()):
            if camera.config.model == model and camera.state.value == "error":
                config = camera.config
                self._stop_camera(name)
                self._add_camera(name, config)

    def reload_config(self) -> ReloadReport:
        """Re-read the config file and apply what can change while running (``reload.py``)."""
        if self.config_path is None:
            raise Refused(
                "this service was started without a config file", "start it with --config"
            )
        try:
            new = load_config(self.config_path)
        except ConfigError as error:
            raise Refused(error.message, error.hint) from None
        with self._reload_lock:
            plan = plan_reload(self.config, new)
            for name in plan.models_swapped:  # checked first: a refusal changes nothing else
                self.models.swap(name, new.models[name].bundle, new.models[name])
            for name in plan.models_added:
                self.models.add(name, new.models[name])
            for name in plan.models_tuned:
                self.models.tune(name, new.models[name])
            for name in plan.cameras_removed + plan.cameras_restarted:
                self._stop_camera(name)
            old_cameras = self.config.cameras
            self.config = new
            for name in plan.models_removed:
                self.models.remove(name)
            for name in plan.cameras_restarted + plan.cameras_added:
                self._add_camera(name, new.cameras[name])
            for name, keys in plan.cameras_tuned.items():
                self._retune(name, old_cameras[name], new.cameras[name], keys)
            if self.mqtt is not None:
                self.mqtt.set_cameras(list(new.cameras))
        applied = plan.applied()
        self.log(
            "config reloaded: "
            + ("; ".join(applied) or "nothing to apply")
            + (
                f"; needs a restart: {', '.join(plan.restart_required)}"
                if plan.restart_required
                else ""
            )
        )
        return ReloadReport(applied=applied, restart_required=plan.restart_required)

    def _retune(self, name: str, old: CameraConfig, new: CameraConfig, keys: set[str]) -> None:
        """Threshold, alarm rule or detection edited in the file: applied to the running
        camera, replacing a value set at run time."""
        camera = self.cameras[name]
        camera.config = new
        kept = self.settings.camera(name)
        if "detect" in keys:
            kept.detect = None
            camera.set_detect(new.detect)
        if "alarm" in keys:
            kept.alarm = None
            camera.set_rule(new.alarm)
        if "threshold" in keys:
            kept.threshold = None
            camera.clear_threshold()
        self.settings.save(name, kept)

    # --- the view the HTTP layer reads ------------------------------------------------
    def camera_stats(self) -> list[CameraStats]:
        return [camera.stats() for camera in list(self.cameras.values())]

    def model_stats(self) -> list[ModelStats]:
        return self.models.stats({c: cfg.model for c, cfg in self.config.cameras.items()})

    def storage_stats(self) -> StorageStats:
        return self.store.storage_stats()

    def not_ready(self) -> list[str]:
        reasons = []
        for name, engine in list(self.engines.items()):
            if engine.state is not ModelState.READY:
                reasons.append(f"model {name} is {engine.state.value}")
        for name, camera in list(self.cameras.items()):
            if camera.config.enabled and not camera.produced.is_set():
                reasons.append(f"camera {name} has produced no frame ({camera.state.value})")
        return reasons

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                for camera in list(self.cameras.values()):
                    stats = camera.stats()
                    self.metrics.rates(camera.name, stats.input_fps, stats.scored_fps)
                for name, engine in list(self.engines.items()):
                    self.metrics.queue_depth(name, engine.queue_depth())
                storage = self.storage_stats()
                self.metrics.storage(storage.media_bytes, storage.free_bytes, storage.outbox)
            except Exception as error:  # noqa: BLE001 - a gauge refresh must not end the service
                self.log(f"metrics refresh failed: {type(error).__name__}: {error}")
