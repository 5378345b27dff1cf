"""MqttLink against a real mosquitto on 127.0.0.1: availability and the last will, event
messages from the outbox in order (also across a broker outage), retained state after a
broker restart, rate-limited scores, and the threshold/detect control pairs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from adedge.errors import AdedgeError
from adedge.runtime.serve.config import MqttConfig
from adedge.runtime.serve.event_types import EndReason, MessageType
from adedge.runtime.serve.mqtt import ControlKind, ControlRequest, MqttLink, MqttTopics

pytestmark = pytest.mark.runtime

NODE = "node-t"


def mqtt_config(broker: Any, **options: Any) -> MqttConfig:
    return MqttConfig(host=broker.host, port=broker.port, **options)


@pytest.fixture
def make_link(event_store_factory: Any, log_lines: Any) -> Any:
    """``make(broker, cameras=("cam1",), **config)``: a started MqttLink on a fresh store;
    stopped at teardown. Its control requests land in ``link.requests``."""
    links: list[MqttLink] = []

    def make(broker: Any, cameras: tuple[str, ...] = ("cam1",), **options: Any) -> MqttLink:
        store = event_store_factory(["mqtt"], name=f"store-{len(links)}")
        requests: list[ControlRequest] = []
        link = MqttLink(
            mqtt_config(broker, **options), NODE, store, cameras, requests.append, log_lines
        )
        link.requests = requests  # type: ignore[attr-defined]
        link.store = store  # type: ignore[attr-defined]
        links.append(link)
        link.start()
        return link

    yield make
    for link in links:
        link.stop()


TOPICS = MqttTopics("adedge", NODE)


def test_available_is_retained_online_and_a_clean_stop_says_offline(
    mosquitto: Any, make_link: Any, mqtt_collector: Any, serve_helpers: Any
) -> None:
    link = make_link(mosquitto)
    first = mqtt_collector(mosquitto, [TOPICS.available])
    first.wait_for_payload(TOPICS.available, "online")
    assert link.connected

    later = mqtt_collector(mosquitto, [TOPICS.available])  # subscribes after the fact
    later.wait_for_payload(TOPICS.available, "online", retain=True)

    link.stop()
    assert not link.connected
    first.wait_for(lambda ms: [m for m in ms if m.topic == TOPICS.available][-1].text == "offline")
    after_stop = mqtt_collector(mosquitto, [TOPICS.available])
    after_stop.wait_for_payload(TOPICS.available, "offline", retain=True)


def test_last_will_says_offline_after_kill_9(
    mosquitto: Any, mqtt_collector: Any, tmp_path: Path, serve_helpers: Any
) -> None:
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from adedge.runtime.serve.config import MqttConfig
        from adedge.runtime.serve.mqtt import MqttLink
        from adedge.runtime.serve.store import EventStore

        store = EventStore(Path({str(tmp_path / "child-store")!r}), ["mqtt"], 2**24)
        config = MqttConfig(host="127.0.0.1", port={mosquitto.port}, keepalive_s=5)
        link = MqttLink(config, {NODE!r}, store, ["cam1"], lambda request: None, print)
        link.start()
        while not link.connected:
            time.sleep(0.02)
        Path({str(ready)!r}).touch()
        time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        serve_helpers.wait_until(ready.exists, what="the child's link to connect")
        watcher = mqtt_collector(mosquitto, [TOPICS.available])
        watcher.wait_for_payload(TOPICS.available, "online")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(20)
        # mosquitto sends the will once 1.5 keepalives pass without a packet
        watcher.wait_for(
            lambda ms: ms[-1].text == "offline", timeout=30, what="the last will 'offline'"
        )
    finally:
        child.kill()
        child.wait(20)
    late = mqtt_collector(mosquitto, [TOPICS.available])
    late.wait_for_payload(TOPICS.available, "offline", retain=True)


def test_event_messages_arrive_in_order_with_id_and_seq(
    mosquitto: Any, make_link: Any, mqtt_collector: Any, serve_helpers: Any
) -> None:
    events = mqtt_collector(mosquitto, [TOPICS.events()])
    link = make_link(mosquitto, cameras=("cam1", "cam2"))
    expected: list[tuple[str, int]] = []
    for camera in ("cam1", "cam2", "cam1"):
        expected += serve_helpers.record_alarm(link.store, camera, updates=3)
        link.wake()

    got = events.wait_for(lambda ms: len(ms) >= len(expected) and ms, what="every message")
    keys = [serve_helpers.message_key(m.payload) for m in got]
    assert keys == expected  # no outage: no repeat either
    assert [m.json()["type"] for m in got[:5]] == ["new", "update", "update", "update", "end"]
    assert all(not m.retain for m in got)
    serve_helpers.wait_until(lambda: link.store.outbox_depth("mqtt") == 0, what="all acked")


def test_broker_outage_during_an_alarm_loses_nothing_and_keeps_the_order(
    mosquitto_factory: Any, make_link: Any, mqtt_collector: Any, serve_helpers: Any
) -> None:
    broker = mosquitto_factory(persistence=True)  # the consumer's session survives a restart
    consumer = mqtt_collector(
        broker, [TOPICS.events()], client_id="consumer-t", clean_session=False
    )
    link = make_link(broker, cameras=("cam1", "cam2"))
    serve_helpers.wait_until(lambda: link.connected, what="the link to connect")
    store = link.store

    first, second = serve_helpers.make_event("cam1"), serve_helpers.make_event("cam2")
    expected: list[tuple[str, int]] = []

    def record(event: Any, kind: MessageType) -> None:
        message = store.record(event, kind)
        expected.append((message["id"], message["seq"]))
        link.wake()

    record(first, MessageType.NEW)
    record(second, MessageType.NEW)
    consumer.wait_for(lambda ms: len(ms) >= 2, what="the alarm's first messages")
    serve_helpers.wait_until(lambda: store.outbox_depth("mqtt") == 0, what="those acked")

    with broker.down(seconds=2.0):
        serve_helpers.wait_until(lambda: not link.connected, what="the link to see the outage")
        for step in range(4):
            first.peak_score += 0.01
            record(first, MessageType.UPDATE)
            if step == 1:
                second.end, second.end_reason = second.start + 1, EndReason.NORMAL
                record(second, MessageType.END)
        first.end, first.end_reason = first.start + 9, EndReason.NORMAL
        record(first, MessageType.END)
        assert store.outbox_depth("mqtt") == len(expected) - 2  # waiting on disk

    def all_arrived(messages: list[Any]) -> list[tuple[str, int]] | None:
        keys = [serve_helpers.message_key(m.payload) for m in messages]
        return keys if set(expected) <= set(keys) else None

    keys = consumer.wait_for(all_arrived, what="every message after the outage")
    assert serve_helpers.first_occurrences(keys) == expected  # none missing, none reordered
    serve_helpers.wait_until(lambda: store.outbox_depth("mqtt") == 0, what="all acked")


def test_a_link_started_while_the_broker_is_down_delivers_once_it_is_up(
    mosquitto_factory: Any,
    make_link: Any,
    mqtt_collector: Any,
    log_lines: Any,
    serve_helpers: Any,
) -> None:
    broker = mosquitto_factory(persistence=True)
    consumer = mqtt_collector(
        broker, [TOPICS.events()], client_id="consumer-u", clean_session=False
    )
    with broker.down():
        link = make_link(broker)  # start() does not raise: events wait in the outbox
        expected = serve_helpers.record_alarm(link.store, "cam1", updates=1)
        link.wake()
        log_lines.wait_for("cannot reach broker")
        assert not link.connected
        assert link.store.outbox_depth("mqtt") == len(expected)

    keys = consumer.wait_for(
        lambda ms: len(ms) >= len(expected) and [serve_helpers.message_key(m.payload) for m in ms],
        what="the messages recorded while the broker was down",
    )
    assert serve_helpers.first_occurrences(keys) == expected


def test_retained_state_status_and_snapshot_are_published_again_after_a_broker_restart(
    mosquitto: Any, make_link: Any, mqtt_collector: Any, serve_helpers: Any
) -> None:
    link = make_link(mosquitto)
    serve_helpers.wait_until(lambda: link.connected, what="the link to connect")
    link.publish_status("cam1", "online")
    link.publish_state("cam1", True)
    link.publish_snapshot("cam1", b"\xff\xd8 a jpeg \xff\xd9")
    link.report("cam1", "threshold", "0.7")
    watcher = mqtt_collector(mosquitto, [f"{TOPICS.base}/#"])
    watcher.wait_for_payload(TOPICS.camera("cam1", "state"), "alarm")

    with mosquitto.down():  # no persistence: the broker forgets every retained message
        serve_helpers.wait_until(lambda: not link.connected, what="the link to see the outage")
        link.publish_state("cam1", False)  # while down: kept for the reconnect
    serve_helpers.wait_until(lambda: link.connected, what="the link to reconnect")
    watcher.wait_for_payload(TOPICS.camera("cam1", "state"), "normal")
    threshold = TOPICS.camera("cam1", "threshold/state")  # re-sent last: then all are in
    watcher.wait_for(lambda ms: sum(m.topic == threshold for m in ms) >= 2, what="re-sent")

    late = mqtt_collector(mosquitto, [f"{TOPICS.base}/#"])
    retained = late.wait_for(
        lambda ms: len({m.topic for m in ms if m.retain}) >= 5 and ms, what="5 retained topics"
    )
    values = {m.topic: m.payload for m in retained if m.retain}
    assert values == {
        TOPICS.available: b"online",
        TOPICS.camera("cam1", "status"): b"online",
        TOPICS.camera("cam1", "state"): b"normal",
        TOPICS.camera("cam1", "snapshot"): b"\xff\xd8 a jpeg \xff\xd9",
        threshold: b"0.7",
    }


def test_scores_are_rate_limited_per_camera(
    mosquitto: Any, make_link: Any, mqtt_collector: Any, serve_helpers: Any
) -> None:
    link = make_link(mosquitto, cameras=("cam1", "cam2"), score_interval_s=3600.0)
    serve_helpers.wait_until(lambda: link.connected, what="the link to connect")
    watcher = mqtt_collector(mosquitto, [f"{TOPICS.base}/+/score", f"{TOPICS.base}/+/status"])
    for value in (0.25, 0.5, 0.75):
        link.publish_score("cam1", value, 1_780_000_000.0)
    link.publish_score("cam2", float("nan"), 1_780_000_000.0)
    link.publish_status("cam1", "online")  # a marker sent after the scores
    watcher.wait_for_payload(TOPICS.camera("cam1", "status"), "online")

    scores = {m.topic: [] for m in watcher.snapshot() if m.topic.endswith("/score")}
    for message in watcher.snapshot():
        if message.topic.endswith("/score"):
            scores[message.topic].append(message.json())
    assert scores == {
        TOPICS.camera("cam1", "score"): [{"score": 0.25, "time": "2026-05-28T20:26:40.000+00:00"}],
        TOPICS.camera("cam2", "score"): [{"score": None, "time": "2026-05-28T20:26:40.000+00:00"}],
    }


def test_threshold_and_detect_set_reach_on_control_and_state_is_reported(
    mosquitto: Any, make_link: Any, mqtt_collector: Any, log_lines: Any, serve_helpers: Any
) -> None:
    link = make_link(mosquitto, cameras=("cam1",))
    serve_helpers.wait_until(lambda: link.connected, what="the link to connect")
    client = mqtt_collector(mosquitto, [f"{TOPICS.base}/#"])
    # the link subscribed before it sends this: once it arrives, its subscription is live
    link.publish_status("cam1", "online")
    client.wait_for_payload(TOPICS.camera("cam1", "status"), "online")

    client.publish(TOPICS.camera("ghost", "threshold/set"), "0.3")  # no such camera
    client.publish(TOPICS.camera("cam1", "threshold/set"), "abc")  # not a number
    client.publish(TOPICS.camera("cam1", "threshold/set"), " 0.5 ")
    client.publish(TOPICS.camera("cam1", "detect/set"), "OFF")
    serve_helpers.wait_until(lambda: len(link.requests) >= 2, what="two control requests")
    log_lines.wait_for("ghost")
    log_lines.wait_for("'abc' is not a number")
    assert link.requests == [
        ControlRequest("cam1", ControlKind.THRESHOLD, "0.5"),
        ControlRequest("cam1", ControlKind.DETECT, "off"),
    ]

    link.report("cam1", "threshold", "0.5")
    client.wait_for_payload(TOPICS.camera("cam1", "threshold/state"), "0.5")  # at the broker
    late = mqtt_collector(mosquitto, [TOPICS.camera("cam1", "threshold/state")])
    late.wait_for_payload(TOPICS.camera("cam1", "threshold/state"), "0.5", retain=True)


def test_credentials_are_used_and_the_password_is_never_logged(
    mosquitto_factory: Any, make_link: Any, log_lines: Any, serve_helpers: Any
) -> None:
    broker = mosquitto_factory(users={"adedge": "pw-right-one"})
    refused = make_link(broker, username="adedge", password="pw-wrong-one")
    log_lines.wait_for("refused the connection")
    accepted = make_link(broker, username="adedge", password="pw-right-one")
    serve_helpers.wait_until(lambda: accepted.connected, what="the link with the password")
    assert not refused.connected
    assert "pw-" not in log_lines.text()
    assert "pw-" not in repr(mqtt_config(broker, password="pw-right-one"))


def test_a_failing_on_control_does_not_break_the_connection(
    mosquitto: Any,
    event_store_factory: Any,
    mqtt_collector: Any,
    log_lines: Any,
    serve_helpers: Any,
) -> None:
    def broken(request: ControlRequest) -> None:
        raise RuntimeError("the service's bug")

    store = event_store_factory(["mqtt"])
    link = MqttLink(mqtt_config(mosquitto), NODE, store, ["cam1"], broken, log_lines)
    link.start()
    try:
        serve_helpers.wait_until(lambda: link.connected, what="the link to connect")
        client = mqtt_collector(mosquitto, [f"{TOPICS.base}/#"])
        link.publish_status("cam1", "online")
        client.wait_for_payload(TOPICS.camera("cam1", "status"), "online")
        client.publish(TOPICS.camera("cam1", "detect/set"), "on")
        log_lines.wait_for("the service's bug")
        key = serve_helpers.record_alarm(store, "cam1", updates=0)
        link.wake()
        client.wait_for(
            lambda ms: (
                [serve_helpers.message_key(m.payload) for m in ms if m.topic == TOPICS.events()]
                == key
            ),
            what="events still delivered",
        )
        assert link.connected
    finally:
        link.stop()


def test_tls_with_a_missing_ca_file_is_a_one_line_config_error(
    tmp_path: Path, event_store_factory: Any
) -> None:
    config = MqttConfig(host="127.0.0.1", tls=True, ca_file=tmp_path / "missing-ca.pem")
    store = event_store_factory(["mqtt"])
    with pytest.raises(AdedgeError, match=r"mqtt\.ca_file: cannot use"):
        MqttLink(config, NODE, store, ["cam1"], lambda request: None, print)
