"""Event messages as HTTP POSTs: one webhook per ``webhooks.<name>`` entry, fed by its own
outbox channel ``webhook:<name>`` in the event store, in order, with the standard library
only (urllib).

Each item's JSON is POSTed with ``Content-Type: application/json`` and the configured
headers (tokens: never logged, nor is the URL's query or user part). A 2xx acknowledges it.
Connection errors, timeouts, 5xx, 408, 425 and 429 retry the same item with exponential
back-off (``backoff_s`` doubling up to ``backoff_cap_s``), so later items wait behind it.

A 4xx that says *this message* is wrong (400, 413, 415, 422 ...) is a permanent refusal:
one log line, and the item is acked (skipped) so one bad message cannot block the line
forever. A 4xx that says *the endpoint or its credentials* are wrong (401, 403, 404, 405,
407) and a redirect (3xx: urllib would re-send a POST as a bodyless GET and the 2xx would
ack a message nobody received) are retried instead: every message would be refused alike,
and skipping would drop a whole night of events over an expired token.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from adedge.runtime.serve.config import WebhookConfig
from adedge.runtime.serve.outbox import Backoff, OutboxWorker, Outcome

if TYPE_CHECKING:
    from adedge.runtime.serve.store import EventStore, OutboxItem

CHANNEL_PREFIX = "webhook:"
RETRY_STATUSES = frozenset({401, 403, 404, 405, 407, 408, 425, 429})
RESPONSE_READ_LIMIT = 64 * 1024  # the body is read (so the connection ends cleanly), not kept


def webhook_channel(name: str) -> str:
    """The outbox channel of ``webhooks.<name>``."""
    return CHANNEL_PREFIX + name


def safe_url(url: str) -> str:
    """``url`` without its user:password and query (where tokens hide): safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def describe(item: OutboxItem) -> str:
    """``event <id> seq <n>`` of an event message (else its outbox row), for a log line."""
    try:
        message = json.loads(item.payload)
        return f"event {message['id']} seq {message['seq']}"
    except (ValueError, KeyError, TypeError):
        return f"outbox message {item.id}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the HTTPError it is (see the module docstring)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookSender:
    """One webhook endpoint. ``delivered`` and ``failures`` (attempts that will be retried,
    plus refusals) are read by the metrics."""

    def __init__(
        self,
        name: str,
        config: WebhookConfig,
        store: EventStore,
        log: Callable[[str], None],
    ) -> None:
        self.name = name
        self.channel = webhook_channel(name)
        self._config = config
        self._log = log
        self._where = f"webhook {name} ({safe_url(config.url)})"
        self._opener = urllib.request.build_opener(_NoRedirect())
        self._failing: str | None = None  # the reason of the current outage, logged once
        self._worker = OutboxWorker(
            f"webhook-{name}",
            store,
            self.channel,
            self._send,
            log,
            Backoff(config.backoff_s, config.backoff_cap_s),
        )

    @property
    def delivered(self) -> int:
        return self._worker.delivered

    @property
    def failures(self) -> int:
        return self._worker.failures + self._worker.refused

    @property
    def refused(self) -> int:
        return self._worker.refused

    @property
    def running(self) -> bool:
        return self._worker.running

    def start(self) -> None:
        self._worker.start()

    def wake(self) -> None:
        self._worker.wake()

    def stop(self) -> None:
        """Back-off waits end at once; a POST in flight may take up to ``timeout_s``."""
        self._worker.stop(timeout=self._config.timeout_s + 5.0)

    def _send(self, item: OutboxItem) -> Outcome:
        request = urllib.request.Request(
            self._config.url,
            data=item.payload.encode("utf-8"),
            method="POST",
            headers={"Content-Type": "application/json", **self._config.headers},
        )
        try:
            with self._opener.open(request, timeout=self._config.timeout_s) as response:
                response.read(RESPONSE_READ_LIMIT)
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
            error.close()
        except (OSError, http.client.HTTPException) as error:  # refused, timeout, TLS, reset
            reason = getattr(error, "reason", None) or error
            return self._retry(f"{type(error).__name__}: {reason}")
        except ValueError:  # http.client's text would quote the bad header: a secret
            return self._retry(f"invalid request: check webhooks.{self.name} url and headers")
        if 200 <= status < 300:
            if self._failing is not None:
                self._log(f"{self._where}: delivering again")
                self._failing = None
            return Outcome.DELIVERED
        if status in RETRY_STATUSES or not 400 <= status < 500:  # 5xx, 3xx
            return self._retry(f"HTTP {status}")
        self._log(
            f"{self._where}: refused {describe(item)} with HTTP {status}; skipped "
            "(a 4xx says this message will never be accepted)"
        )
        return Outcome.REFUSED

    def _retry(self, reason: str) -> Outcome:
        if self._failing != reason:
            self._failing = reason
            self._log(f"{self._where}: {reason}; events wait in the outbox, retrying")
        return Outcome.RETRY
