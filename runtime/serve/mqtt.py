"""The service on an MQTT broker (paho-mqtt 2.x): availability, event messages from the
outbox, per-camera state, status, score and snapshot, and the control pairs
``<camera>/threshold/set`` and ``<camera>/detect/set``.

Topics live under ``<topic_prefix>/<node>/`` (:class:`MqttTopics`). Event messages are sent
one at a time, oldest first: publish (QoS 1), wait for the broker's PUBACK, ack the item in
the store, then the next. A disconnect pauses the line; after the reconnect it resumes from
the oldest item not acked, so a message may arrive twice (each carries the event ``id`` and
``seq``: consumers drop repeats) but none is lost or reordered.

Session choice: a clean session (MQTT 3.1.1, ``clean_session=True``), and on every connect
paho's own unacknowledged copies are dropped before anything is sent. The outbox is the
durable queue, so the broker's session would only add a second, volatile copy: it would
re-send stale retained values after newer ones and queue ``/set`` commands sent while the
service was away, applying old commands late. Instead every connect re-publishes
``available``, the last retained value of every camera topic, and re-subscribes.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from adedge.errors import AdedgeError
from adedge.runtime.records import finite_or_none, iso_time
from adedge.runtime.serve.config import MqttConfig
from adedge.runtime.serve.outbox import Backoff, OutboxWorker, Outcome

if TYPE_CHECKING:
    from adedge.runtime.serve.store import EventStore, OutboxItem

CHANNEL = "mqtt"
RECONNECT_MIN_S = 1  # paho's reconnect back-off: 1, 2, 4 ... up to this cap
RECONNECT_MAX_S = 15
PUBACK_POLL_S = 0.2  # how often a wait for a PUBACK looks for a disconnect or stop()
OFFLINE_PUBACK_S = 3.0  # stop(): how long the retained 'offline' may take
DETECT_VALUES = {"on": "on", "true": "on", "1": "on", "off": "off", "false": "off", "0": "off"}


class ControlKind(str, Enum):
    """What a ``<camera>/<kind>/set`` message changes."""

    THRESHOLD = "threshold"
    DETECT = "detect"


@dataclass(frozen=True)
class ControlRequest:
    """A parsed control message. ``value``: the threshold as the text of a finite number
    (``"0.5"``), or ``"on"``/``"off"`` for detect."""

    camera: str
    what: ControlKind
    value: str


class MqttTopics:
    """Every topic name of one node, so the service, tests and consumers agree."""

    def __init__(self, prefix: str, node: str) -> None:
        self.base = f"{prefix.strip('/')}/{node}"
        self.available = f"{self.base}/available"
        self.control = [f"{self.base}/+/{kind.value}/set" for kind in ControlKind]

    def events(self, topic: str = "events") -> str:
        return f"{self.base}/{topic}"

    def camera(self, camera: str, leaf: str) -> str:
        """``leaf``: state, status, score, snapshot, or ``threshold/state`` ..."""
        return f"{self.base}/{camera}/{leaf}"

    def parse_control(self, topic: str) -> tuple[str, str] | None:
        """(camera, kind) of a ``<base>/<camera>/<kind>/set`` topic, else None."""
        head = self.base + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) != 3 or parts[2] != "set":
            return None
        return parts[0], parts[1]


def parse_control_value(kind: ControlKind, payload: bytes) -> str:
    """The normalised value of a control message; ValueError says why it is refused."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError("the payload is not UTF-8 text") from None
    if kind is ControlKind.THRESHOLD:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"'{text[:40]}' is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"'{text[:40]}' is not a finite number")
        return text
    value = DETECT_VALUES.get(text.lower())
    if value is None:
        raise ValueError(f"'{text[:40]}' is not on/off")
    return value


class MqttLink:
    """One connection to the broker for the whole service. ``publish_*`` and ``report`` are
    called from camera threads and never wait on the network: while disconnected, retained
    values are kept (the last per topic) and sent on the next connect; scores are dropped.
    ``on_control`` runs on paho's thread: keep it short."""

    def __init__(
        self,
        config: MqttConfig,
        node: str,
        store: EventStore,
        cameras: Sequence[str],
        on_control: Callable[[ControlRequest], None],
        log: Callable[[str], None],
    ) -> None:
        self.topics = MqttTopics(config.topic_prefix, node)
        self._config = config
        self._cameras = frozenset(cameras)
        self._on_control = on_control
        self._log = log
        self._lock = threading.RLock()  # state below, and retained publishes in order
        self._connected = False
        self._generation = 0  # +1 on every connect and disconnect
        self._retained: dict[str, str | bytes] = {}  # topic -> last value, re-sent on connect
        self._last_score: dict[str, float] = {}  # camera -> monotonic time of the last score
        self._outage_logged = False
        self._stopping = False
        self._client = self._make_client(node)
        self._worker = OutboxWorker(
            "mqtt-outbox",
            store,
            CHANNEL,
            self._send_event,
            log,
            Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S),
        )

    def _make_client(self, node: str) -> mqtt.Client:
        config = self._config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id or f"adedge-{node}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.suppress_exceptions = True  # a bug in a callback must not end paho's thread
        if config.username:
            client.username_pw_set(config.username, config.password)
        if config.tls:
            ca = None if config.ca_file is None else str(config.ca_file)
            try:
                client.tls_set(ca_certs=ca)
            except (OSError, ValueError) as error:
                raise AdedgeError(
                    f"mqtt.ca_file: cannot use '{ca}' for TLS ({error})",
                    "point mqtt.ca_file at the broker's CA certificate (PEM)",
                ) from None
        client.will_set(self.topics.available, "offline", qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def delivered(self) -> int:
        """Event messages the broker acknowledged."""
        return self._worker.delivered

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself. Never raises for a broker
        that is down: the outbox keeps the events until it is up."""
        self._client.connect_async(self._config.host, self._config.port, self._config.keepalive_s)
        self._client.loop_start()
        self._worker.start()

    def stop(self) -> None:
        """Retained ``offline``, a clean disconnect (the broker drops the will), threads
        joined. Items not yet acknowledged stay in the outbox for the next start."""
        self._stopping = True
        self._worker.stop()
        if self._connected:
            info = self._client.publish(self.topics.available, "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(OFFLINE_PUBACK_S)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected = False

    def wake(self) -> None:
        """New outbox items: send them now."""
        self._worker.wake()

    def publish_state(self, camera: str, alarm: bool) -> None:
        self._publish_retained(self.topics.camera(camera, "state"), "alarm" if alarm else "normal")

    def publish_status(self, camera: str, status: str) -> None:
        self._publish_retained(self.topics.camera(camera, "status"), status)

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None:
        """The last alarm's JPEG, retained (also re-sent after a reconnect)."""
        self._publish_retained(self.topics.camera(camera, "snapshot"), bytes(jpeg))

    def report(self, camera: str, what: str, value: str) -> None:
        """``<camera>/<what>/state``, retained: the value a control now has."""
        self._publish_retained(self.topics.camera(camera, f"{what}/state"), value)

    def publish_score(self, camera: str, score: float, wall: float) -> None:
        """``{"score": s, "time": ISO}`` at most every ``score_interval_s`` per camera, QoS 0;
        dropped while disconnected (a score is stale by the time the broker is back)."""
        now = time.monotonic()
        with self._lock:
            last = self._last_score.get(camera)
            if not self._connected or (
                last is not None and now - last < self._config.score_interval_s
            ):
                return
            self._last_score[camera] = now
        payload = json.dumps({"score": finite_or_none(float(score)), "time": iso_time(wall)})
        self._client.publish(self.topics.camera(camera, "score"), payload, qos=0)

    def _publish_retained(self, topic: str, payload: str | bytes) -> None:
        # Under the lock, so that a connect's re-publish and this one cannot overtake each
        # other: the broker keeps the newest value. paho's publish only queues bytes.
        with self._lock:
            self._retained[topic] = payload
            if self._connected:
                self._client.publish(topic, payload, qos=1, retain=True)

    # --- event messages (the outbox worker's thread) -------------------------------------

    def _send_event(self, item: OutboxItem) -> Outcome:
        """Publish one item and wait for its PUBACK; paused by a disconnect or stop()."""
        with self._lock:
            if not self._connected:
                return Outcome.PAUSED
            generation = self._generation
        info = self._client.publish(self.topics.events(item.topic), item.payload, qos=1)
        while True:
            if self._generation != generation or self._worker.stopping:
                return Outcome.PAUSED  # resend from the oldest after the reconnect
            try:
                if info.is_published():
                    return Outcome.DELIVERED
                info.wait_for_publish(PUBACK_POLL_S)
            except (RuntimeError, ValueError):
                return Outcome.PAUSED  # not sent (the connection just went): same

    # --- paho callbacks (paho's thread; never raise) -------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        try:
            if reason.is_failure:  # paho retries with back-off; say it once
                if not self._outage_logged:
                    self._outage_logged = True
                    self._log(f"mqtt: {self._where()} refused the connection: {reason}")
                return
            with self._lock:
                client.drop_out_messages()  # stale copies: the outbox and _retained are newer
                self._generation += 1
                client.publish(self.topics.available, "online", qos=1, retain=True)
                client.subscribe([(topic, 1) for topic in self.topics.control])
                for topic, payload in self._retained.items():
                    client.publish(topic, payload, qos=1, retain=True)
                self._connected = True
                self._outage_logged = False
            self._log(f"mqtt: connected to {self._where()}")
            self._worker.wake()
        except Exception as error:  # never end paho's thread
            self._log(f"mqtt: error after connecting: {type(error).__name__}: {error}")

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            self._log(f"mqtt: cannot reach {self._where()}; retrying with back-off")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        with self._lock:
            was_connected = self._connected
            self._connected = False
            self._generation += 1
        if was_connected and not self._stopping:
            self._outage_logged = True
            self._log(f"mqtt: lost {self._where()} ({reason}); events wait in the outbox")

    def set_cameras(self, cameras: Sequence[str]) -> None:
        """The cameras control messages may address (after a config reload)."""
        self._cameras = frozenset(cameras)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._handle_control(message.topic, message.payload, bool(message.retain))
        except Exception as error:  # on_control's own bug: log, keep the connection
            self._log(f"mqtt: control on {message.topic} failed: {type(error).__name__}: {error}")

    def _handle_control(self, topic: str, payload: bytes, retained: bool) -> None:
        parsed = self.topics.parse_control(topic)
        if parsed is None:
            return
        camera, kind_name = parsed
        if retained:  # a command kept by the broker would be re-applied on every connect
            self._log(f"mqtt: ignored retained command on {topic}: publish commands unretained")
            return
        if camera not in self._cameras:
            self._log(f"mqtt: ignored {topic}: no camera '{camera}' on this node")
            return
        kind = ControlKind(kind_name)
        try:
            value = parse_control_value(kind, payload)
        except ValueError as error:
            self._log(f"mqtt: ignored {topic}: {error}")
            return
        self._on_control(ControlRequest(camera, kind, value))

    def _where(self) -> str:
        return f"broker {self._config.host}:{self._config.port}"
