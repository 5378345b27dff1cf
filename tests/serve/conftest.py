"""Real parts for the service's tests: a mosquitto broker on 127.0.0.1 with its own config
file (stopped and restarted on the same port for outages), an MQTT subscriber that records
what arrives, a local HTTP server that receives webhooks (and can answer errors or go
away), an event store in tmp, and events to put in it.

Waits poll with generous deadlines (a slow 2-core CI machine): they end as soon as what
they wait for happened and fail with what arrived instead.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pwd
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

MOSQUITTO = Path("/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")
WAIT_S = 20.0  # deadline for something that must happen
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(
    check: Callable[[], T], timeout: float = WAIT_S, what: str = "condition", step: float = 0.02
) -> T:
    """``check()``'s first truthy value; AssertionError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


# --- mosquitto -------------------------------------------------------------------------


class Mosquitto:
    """One broker process on 127.0.0.1:``port``. ``stop()``/``start()`` restart it on the
    same port (``with broker.down(): ...`` for an outage); ``persistence=True`` keeps
    retained messages and persistent sessions across a restart, as a production broker
    would."""

    host = "127.0.0.1"

    def __init__(
        self,
        folder: Path,
        persistence: bool = False,
        users: dict[str, str] | None = None,
        extra: str = "",
    ) -> None:
        self.folder = folder
        self.port = free_port()
        self.log_file = folder / "mosquitto.log"
        self.config_file = folder / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "log_dest stderr"]
        if users:  # only these may connect
            passwords = folder / "passwords"
            for number, (user, password) in enumerate(users.items()):
                create = ["-c"] if number == 0 else []
                command = [str(MOSQUITTO_PASSWD), *create, "-b", str(passwords), user, password]
                subprocess.run(command, check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        if os.geteuid() == 0:  # as root, mosquitto would switch to a user that cannot write tmp
            lines.append(f"user {pwd.getpwuid(0).pw_name}")
        if persistence:
            lines += ["persistence true", f"persistence_location {folder}/", "autosave_interval 0"]
        else:
            lines.append("persistence false")
        self.config_file.write_text("\n".join(lines) + "\n" + extra)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(self.config_file)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + WAIT_S
        while not self._accepts():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not start:\n{self.log()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file), SIGKILL if it lingers."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    @contextlib.contextmanager
    def down(self, seconds: float = 0.0) -> Iterator[None]:
        """An outage: stopped inside the block (and at least ``seconds``), started after."""
        self.stop()
        began = time.monotonic()
        try:
            yield
            time.sleep(max(0.0, seconds - (time.monotonic() - began)))
        finally:
            self.start()

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def _accepts(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.5):
            return True
        return False


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """``make(persistence=False, users=None, extra="")``: a started broker in its own folder
    (``users``: name -> password, and anonymous clients refused)."""
    if not MOSQUITTO.exists():
        pytest.skip(f"{MOSQUITTO} is missing: `make system-deps` installs mosquitto")
    brokers: list[Mosquitto] = []

    def make(
        persistence: bool = False, users: dict[str, str] | None = None, extra: str = ""
    ) -> Mosquitto:
        folder = tmp_path / f"mosquitto-{len(brokers)}"
        folder.mkdir()
        broker = Mosquitto(folder, persistence, users, extra)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A started broker (no persistence: a restart forgets retained messages)."""
    return mosquitto_factory()


# --- an MQTT subscriber ----------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.payload)


class MqttCollector:
    """A paho client that subscribes (again after every reconnect) and keeps every message.
    ``client_id`` with ``clean_session=False`` makes a persistent session: the broker queues
    QoS 1 messages for it while it is away (with a persistent broker, across restarts)."""

    def __init__(
        self, broker: Mosquitto, topics: list[str], client_id: str = "", clean_session=True
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.topics = topics
        self.messages: list[Received] = []
        self.subscribed = threading.Event()
        self._condition = threading.Condition()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self.subscribed.set()
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 1)
        self._client.connect(broker.host, broker.port, keepalive=30)
        self._client.loop_start()
        wait_until(self.subscribed.is_set, what=f"a subscription to {topics}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._condition:
            self.messages.append(Received(message.topic, bytes(message.payload), message.retain))
            self._condition.notify_all()

    def snapshot(self) -> list[Received]:
        with self._condition:
            return list(self.messages)

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.snapshot() if m.topic == topic]

    def last(self, topic: str) -> Received | None:
        found = self.on(topic)
        return found[-1] if found else None

    def wait_for(
        self, predicate: Callable[[list[Received]], Any], timeout: float = WAIT_S, what: str = ""
    ) -> Any:
        """``predicate(messages)``'s first truthy value, re-checked as messages arrive."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                value = predicate(list(self.messages))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [(m.topic, m.payload[:80], m.retain) for m in self.messages[-20:]]
                    raise AssertionError(f"timed out waiting for {what or predicate}; got {got}")
                self._condition.wait(min(left, 0.5))

    def wait_for_payload(
        self, topic: str, payload: str | bytes, retain: bool | None = None
    ) -> None:
        want = payload.encode() if isinstance(payload, str) else payload
        self.wait_for(
            lambda ms: any(
                m.topic == topic and m.payload == want and retain in (None, m.retain) for m in ms
            ),
            what=f"{want[:40]!r} on {topic}" + ("" if retain is None else f" retain={retain}"),
        )

    def wait_for_state(self, topic: str, payload: str) -> None:
        """Until the newest message on ``topic`` is ``payload``: a state that returns to an
        earlier value (detect on, off, on) must not match the first one."""
        want = payload.encode()
        self.wait_for(
            lambda ms: [m.payload for m in ms if m.topic == topic][-1:] == [want],
            what=f"{want[:40]!r} as the newest message on {topic}",
        )

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def mqtt_collector() -> Iterator[Callable[..., MqttCollector]]:
    """``collect(broker, ["adedge/#"], client_id="", clean_session=True)``: a subscriber,
    connected and subscribed when returned, closed at teardown."""
    made: list[MqttCollector] = []

    def collect(broker: Mosquitto, topics: list[str], **options: Any) -> MqttCollector:
        collector = MqttCollector(broker, topics, **options)
        made.append(collector)
        return collector

    yield collect
    for collector in made:
        collector.close()


# --- a webhook receiver -----------------------------------------------------------------


@dataclass(frozen=True)
class HookRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A ThreadingHTTPServer on 127.0.0.1:``port`` recording every POST. ``status`` is what
    it answers (default 200); ``responder(request) -> status`` overrides it per request.
    ``stop()``/``start()`` make the port refuse connections and accept them again."""

    port: int = field(default_factory=free_port)
    status: int = 200
    responder: Callable[[HookRequest], int] | None = None
    requests: list[HookRequest] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = HookRequest(self.path, dict(self.headers.items()), body, 0)
                status = receiver.responder(request) if receiver.responder else receiver.status
                with receiver._lock:
                    receiver.requests.append(
                        HookRequest(request.path, request.headers, body, status)
                    )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def snapshot(self) -> list[HookRequest]:
        with self._lock:
            return list(self.requests)

    def accepted(self) -> list[HookRequest]:
        return [r for r in self.snapshot() if 200 <= r.status < 300]

    def wait_for(
        self, predicate: Callable[[list[HookRequest]], Any], timeout: float = WAIT_S, what=""
    ) -> Any:
        return wait_until(lambda: predicate(self.snapshot()), timeout, what or "webhook requests")


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


# --- the event store, events and log lines ------------------------------------------------


@pytest.fixture
def event_store_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make(channels, name="store")``: an EventStore in tmp, closed at teardown."""
    from adedge.runtime.serve.store import EventStore

    stores: list[EventStore] = []

    def make(channels: list[str], name: str = "store") -> EventStore:
        store = EventStore(tmp_path / name, channels, max_bytes=64 * 1024**2)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


_event_clock = itertools.count()


def make_event(camera: str = "cam1", node: str = "node-t", score: float = 0.9) -> Any:
    """An open event of ``camera`` (unique id, start time increasing per call)."""
    from adedge.runtime.serve.event_types import Event, ModelRef, ThresholdSource

    start = 1_780_000_000.0 + next(_event_clock)
    return Event(
        id=Event.new_id(camera, start),
        node=node,
        camera=camera,
        model=ModelRef("model", "0" * 64, "onnxruntime"),
        start=start,
        peak_score=score,
        peak_time=start,
        threshold=0.5,
        threshold_source=ThresholdSource.CARD,
    )


def record_alarm(store: Any, camera: str = "cam1", updates: int = 2) -> list[tuple[str, int]]:
    """One whole event in ``store``: new, ``updates`` updates, end. Its (id, seq) in order."""
    from adedge.runtime.serve.event_types import EndReason, MessageType

    event = make_event(camera)
    keys = [_key(store.record(event, MessageType.NEW))]
    for step in range(updates):
        event.peak_score += 0.01 * (step + 1)
        keys.append(_key(store.record(event, MessageType.UPDATE)))
    event.end, event.end_reason = event.start + 5.0, EndReason.NORMAL
    keys.append(_key(store.record(event, MessageType.END)))
    return keys


def _key(message: dict[str, Any]) -> tuple[str, int]:
    return message["id"], message["seq"]


def message_key(payload: bytes | str) -> tuple[str, int]:
    """(id, seq) of an event message: what a consumer drops repeats by."""
    return _key(json.loads(payload))


def first_occurrences(keys: list[T]) -> list[T]:
    """``keys`` with repeats removed, keeping the first: an at-least-once consumer's view."""
    seen: set[T] = set()
    return [k for k in keys if not (k in seen or seen.add(k))]


class LogLines:
    """A ``log`` callable that keeps its lines (thread-safe)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for(self, fragment: str, timeout: float = WAIT_S) -> None:
        wait_until(lambda: fragment in self.text(), timeout, f"a log line with {fragment!r}")


@pytest.fixture
def log_lines() -> LogLines:
    return LogLines()


@pytest.fixture
def serve_helpers() -> Any:
    """The plain helpers above (a test module cannot import a conftest by name)."""
    import types

    return types.SimpleNamespace(
        wait_until=wait_until,
        make_event=make_event,
        record_alarm=record_alarm,
        message_key=message_key,
        first_occurrences=first_occurrences,
        LogLines=LogLines,
    )


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scenes' bundle (serve_scenes): score = the brightest pixel, threshold 0.5."""
    from serve_scenes import brightest_pixel_bundle

    return brightest_pixel_bundle(tmp_path_factory.mktemp("bundle"))
