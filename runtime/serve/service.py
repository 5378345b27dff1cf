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

from adedge.bundle import CARD_NAME, sha256_file
from adedge.runtime.detector import Detector
from adedge.runtime.serve.camera import Camera
from adedge.runtime.serve.config import ServeConfig
from adedge.runtime.serve.engine import SharedEngine
from adedge.runtime.serve.event_types import ModelRef
from adedge.runtime.serve.hub import Hub
from adedge.runtime.serve.metrics import ServiceMetrics
from adedge.runtime.serve.stats import CameraStats, ModelState, ModelStats, StorageStats
from adedge.runtime.serve.store import EventStore

if TYPE_CHECKING:
    from adedge.runtime.serve.mqtt import ControlRequest

Log = Callable[[str], None]
TICK_S = 1.0  # how often rates, queue depths and storage gauges are refreshed
FLUSH_GRACE_S = 3.0  # on stop: time the channels get to deliver what is queued
CAMERA_STOP_S = 15.0  # on stop: time the cameras get, together, to end events and clips
MQTT_CHANNEL = "mqtt"


def webhook_channel(name: str) -> str:
    return f"webhook:{name}"


class Service:
    """``adedge serve`` (see the module docstring); also the HTTP layer's ServiceView."""

    def __init__(self, config: ServeConfig, log: Log) -> None:
        self.config = config
        self.log = log
        self.node = config.node.id
        self.started = time.time()
        self.metrics = ServiceMetrics()
        channels = [webhook_channel(name) for name in config.webhooks]
        if config.mqtt is not None:
            channels.insert(0, MQTT_CHANNEL)
        storage = config.storage
        self.store = EventStore(storage.path, channels, storage.max_bytes, storage.min_free_bytes)
        self.hub = Hub(self.store, self.metrics, log)
        self.engines: dict[str, SharedEngine] = {}
        self.model_refs: dict[str, ModelRef] = {}
        for name, model in config.models.items():
            self.engines[name] = SharedEngine(
                name,
                self._loader(name),
                model.max_batch,
                model.max_delay_ms,
                observe=self._batch_observer(name),
            )
        self.cameras: dict[str, Camera] = {}
        self.mqtt = None
        self.webhooks: list = []
        self.api = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # --- building -----------------------------------------------------------------------
    def _loader(self, name: str) -> Callable[[], Detector]:
        model = self.config.models[name]

        def load() -> Detector:
            detector = Detector(model.bundle, backend=model.backend_spec, threads=model.threads)
            detector.card.warn_if_unknown_method(self.log)
            return detector

        return load

    def _batch_observer(self, name: str) -> Callable[[int, int, float], None]:
        def observe(frames: int, rows: int, seconds: float) -> None:
            self.metrics.batch(name, rows, seconds)

        return observe

    def _model_ref(self, name: str) -> ModelRef:
        model = self.config.models[name]
        card = Path(model.bundle) / CARD_NAME
        sha = sha256_file(card) if card.is_file() else ""
        return ModelRef(name, sha, model.backend_spec)

    # --- life ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start every part (see the module docstring); returns once all are running."""
        closed = self.store.close_interrupted(time.time())
        if closed:
            self.log(f"closed {len(closed)} event(s) left open by the last run as interrupted")
        for name, engine in self.engines.items():
            self.log(f"loading model {name} from {self.config.models[name].bundle}")
            if engine.load():
                engine.start()
                self.model_refs[name] = self._model_ref(name)
            else:
                self.log(f"model {name} failed to load: {engine.error}; its cameras are errored")
            self.metrics.model_up(name, engine.state is ModelState.READY)
        self._start_channels()
        for name, camera_config in self.config.cameras.items():
            engine = self.engines[camera_config.model]
            engine.add_camera(name)
            self.metrics.camera_added(name, camera_config.model)
            ref = self.model_refs.get(camera_config.model) or ModelRef(
                camera_config.model, "", self.config.models[camera_config.model].backend_spec
            )
            camera = Camera(
                name, camera_config, engine, self.hub, self.node, self.config.node.labels, ref
            )
            self.cameras[name] = camera
            camera.start()
        self._start_api()
        self._ticker = threading.Thread(target=self._tick, name="serve-ticker", daemon=True)
        self._ticker.start()
        self.log(
            f"serving {len(self.cameras)} camera(s) with {len(self.engines)} model(s) "
            f"as node {self.node}; events in {self.store.root}"
        )

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

    def _start_api(self) -> None:
        api = self.config.api
        if not api.enabled:
            return
        from adedge.runtime.serve.http_api import ApiServer, build_app

        self.api = ApiServer(build_app(self, self.metrics, log=self.log), api, self.log)
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
        for engine in self.engines.values():
            engine.stop()
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
        from adedge.runtime.serve.mqtt import ControlKind

        camera = self.cameras.get(request.camera)
        if camera is None:
            return
        if request.what is ControlKind.THRESHOLD:  # the link checked it is a finite number
            camera.set_threshold(float(request.value))
            self.log(f"camera {camera.name}: threshold set to {request.value} over MQTT")
        elif request.what is ControlKind.DETECT:
            camera.set_detect(request.value == "on")
            self.log(f"camera {camera.name}: detection {request.value} over MQTT")

    # --- the view the HTTP layer reads ------------------------------------------------
    def camera_stats(self) -> list[CameraStats]:
        return [camera.stats() for camera in self.cameras.values()]

    def model_stats(self) -> list[ModelStats]:
        stats = []
        for name, engine in self.engines.items():
            ref = self.model_refs.get(name)
            batches = engine.stats.batches
            stats.append(
                ModelStats(
                    name=name,
                    bundle=str(self.config.models[name].bundle),
                    sha256=None if ref is None else ref.sha256,
                    backend=self.config.models[name].backend_spec,
                    state=engine.state,
                    cameras=[c for c, cfg in self.config.cameras.items() if cfg.model == name],
                    queue_depth=engine.queue_depth(),
                    batches=batches,
                    frames=engine.stats.frames,
                    mean_batch_rows=(engine.stats.rows / batches) if batches else None,
                    error=engine.error,
                )
            )
        return stats

    def storage_stats(self) -> StorageStats:
        return self.store.storage_stats()

    def not_ready(self) -> list[str]:
        reasons = []
        for name, engine in self.engines.items():
            if engine.state is not ModelState.READY:
                reasons.append(f"model {name} is {engine.state.value}")
        for name, camera in self.cameras.items():
            if camera.config.enabled and not camera.produced.is_set():
                reasons.append(f"camera {name} has produced no frame ({camera.state.value})")
        return reasons

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                for camera in self.cameras.values():
                    stats = camera.stats()
                    self.metrics.rates(camera.name, stats.input_fps, stats.scored_fps)
                for name, engine in self.engines.items():
                    self.metrics.queue_depth(name, engine.queue_depth())
                storage = self.storage_stats()
                self.metrics.storage(storage.media_bytes, storage.free_bytes, storage.outbox)
            except Exception as error:  # noqa: BLE001 - a gauge refresh must not end the service
                self.log(f"metrics refresh failed: {type(error).__name__}: {error}")
