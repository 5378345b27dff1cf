"""WebhookSender against a real local HTTP server: in order with the configured headers,
retries with back-off through 503s and a refused port, a 400 skipped with a log line, a
401 retried (not skipped), secrets never logged, and stop() not waiting out a back-off."""

from __future__ import annotations

from typing import Any

import pytest

from adedge.runtime.serve.config import WebhookConfig
from adedge.runtime.serve.webhooks import WebhookSender, safe_url, webhook_channel

pytestmark = pytest.mark.runtime

CHANNEL = webhook_channel("hook")
FAST = {"backoff_s": 0.05, "backoff_cap_s": 0.2, "timeout_s": 5.0}


@pytest.fixture
def make_sender(event_store_factory: Any, log_lines: Any) -> Any:
    """``make(url, **config)``: a started sender named ``hook`` on a fresh store."""
    senders: list[WebhookSender] = []

    def make(url: str, **options: Any) -> WebhookSender:
        store = event_store_factory([CHANNEL, "mqtt"], name=f"store-{len(senders)}")
        sender = WebhookSender("hook", WebhookConfig(url=url, **options), store, log_lines)
        sender.store = store  # type: ignore[attr-defined]
        senders.append(sender)
        sender.start()
        return sender

    yield make
    for sender in senders:
        sender.stop()


def keys(requests: list[Any]) -> list[tuple[str, int]]:
    return [(r.json()["id"], r.json()["seq"]) for r in requests]


def record(sender: Any, helpers: Any, alarms: int = 2) -> list[tuple[str, int]]:
    expected: list[tuple[str, int]] = []
    for camera in ["cam1", "cam2"][:alarms]:
        expected += helpers.record_alarm(sender.store, camera, updates=1)
        sender.wake()
    return expected


def test_messages_are_posted_in_order_with_the_configured_headers(
    webhook_receiver: Any, make_sender: Any, log_lines: Any, serve_helpers: Any
) -> None:
    url = webhook_receiver.url("/hook?token=query-secret")
    sender = make_sender(url, headers={"Authorization": "Bearer header-secret"}, **FAST)
    expected = record(sender, serve_helpers)

    got = webhook_receiver.wait_for(lambda rs: len(rs) >= len(expected) and rs)
    assert keys(got) == expected
    assert {r.path for r in got} == {"/hook?token=query-secret"}
    assert all(r.headers["Authorization"] == "Bearer header-secret" for r in got)
    assert all(r.headers["Content-Type"] == "application/json" for r in got)
    assert [r.json()["type"] for r in got[:3]] == ["new", "update", "end"]
    serve_helpers.wait_until(lambda: sender.store.outbox_depth(CHANNEL) == 0, what="all acked")
    assert sender.delivered == len(expected) and sender.failures == 0
    assert sender.store.outbox_depth("mqtt") == len(expected)  # another channel's own line

    webhook_receiver.stop()  # a failure gets logged: it must not carry the secrets either
    record(sender, serve_helpers, alarms=1)
    log_lines.wait_for("webhook hook")
    assert "secret" not in log_lines.text()
    assert safe_url("https://user:pw@example.com:8443/in?key=k") == "https://example.com:8443/in"


def test_503_is_retried_with_backoff_and_the_line_waits_behind_it(
    webhook_receiver: Any, make_sender: Any, serve_helpers: Any
) -> None:
    webhook_receiver.status = 503
    sender = make_sender(webhook_receiver.url(), **FAST)
    expected = record(sender, serve_helpers)
    refused = webhook_receiver.wait_for(lambda rs: len(rs) >= 3 and rs, what="three 503s")
    assert set(keys(refused)) == {expected[0]}  # the first message is retried, nothing passes it

    webhook_receiver.status = 200
    webhook_receiver.wait_for(lambda rs: len([r for r in rs if r.status == 200]) >= len(expected))
    assert keys(webhook_receiver.accepted()) == expected
    assert sender.failures >= 3
    serve_helpers.wait_until(lambda: sender.store.outbox_depth(CHANNEL) == 0, what="all acked")


def test_a_400_is_skipped_with_a_log_line_and_the_rest_delivered(
    webhook_receiver: Any, make_sender: Any, log_lines: Any, serve_helpers: Any
) -> None:
    webhook_receiver.responder = lambda r: 400 if r.json()["seq"] == 1 else 200
    sender = make_sender(webhook_receiver.url(), **FAST)
    expected = serve_helpers.record_alarm(sender.store, "cam1", updates=2)
    sender.wake()

    webhook_receiver.wait_for(lambda rs: len(rs) >= len(expected))
    assert keys(webhook_receiver.snapshot()) == expected  # each tried once, in order
    assert keys(webhook_receiver.accepted()) == [k for k in expected if k != expected[1]]
    log_lines.wait_for("with HTTP 400; skipped")
    serve_helpers.wait_until(lambda: sender.store.outbox_depth(CHANNEL) == 0, what="all acked")
    assert sender.refused == 1 and sender.delivered == len(expected) - 1


def test_a_401_is_retried_not_skipped(
    webhook_receiver: Any, make_sender: Any, serve_helpers: Any
) -> None:
    """An expired token refuses every message alike: they wait until it is fixed."""
    webhook_receiver.status = 401
    sender = make_sender(webhook_receiver.url(), **FAST)
    expected = record(sender, serve_helpers, alarms=1)
    webhook_receiver.wait_for(lambda rs: len(rs) >= 2, what="two 401s")
    webhook_receiver.status = 200
    webhook_receiver.wait_for(lambda rs: len([r for r in rs if r.status == 200]) >= len(expected))
    assert keys(webhook_receiver.accepted()) == expected
    assert sender.refused == 0


def test_a_receiver_that_refuses_connections_gets_everything_when_it_is_back(
    webhook_receiver: Any, make_sender: Any, log_lines: Any, serve_helpers: Any
) -> None:
    webhook_receiver.stop()
    sender = make_sender(webhook_receiver.url(), **FAST)
    expected = record(sender, serve_helpers)
    serve_helpers.wait_until(lambda: sender.failures >= 2, what="failed attempts")
    log_lines.wait_for("Connection refused")
    assert sender.store.outbox_depth(CHANNEL) == len(expected)

    webhook_receiver.start()
    webhook_receiver.wait_for(lambda rs: len(rs) >= len(expected))
    assert keys(webhook_receiver.accepted()) == expected
    log_lines.wait_for("delivering again")
    serve_helpers.wait_until(lambda: sender.store.outbox_depth(CHANNEL) == 0, what="all acked")


def test_stop_does_not_wait_out_the_backoff(
    webhook_receiver: Any, make_sender: Any, serve_helpers: Any
) -> None:
    webhook_receiver.stop()
    sender = make_sender(webhook_receiver.url(), backoff_s=3600.0, backoff_cap_s=3600.0)
    record(sender, serve_helpers, alarms=1)
    serve_helpers.wait_until(lambda: sender.failures >= 1, what="a failed attempt")
    sender.stop()  # joins with a deadline shorter than the back-off
    assert not sender.running


def test_a_header_with_a_newline_is_retried_without_logging_its_value(
    webhook_receiver: Any, make_sender: Any, log_lines: Any, serve_helpers: Any
) -> None:
    sender = make_sender(webhook_receiver.url(), headers={"X-Token": "tok-secret\n"}, **FAST)
    record(sender, serve_helpers, alarms=1)
    log_lines.wait_for("invalid request: check webhooks.hook url and headers")
    assert "tok-secret" not in log_lines.text()
    assert webhook_receiver.snapshot() == []
