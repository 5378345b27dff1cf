"""The delivery loop every channel shares: a thread that drains one channel's outbox (in the
event store) strictly in order and acknowledges an item only after its receiver did.

An event message is committed to the outbox before anyone tries to send it, so a broker or
endpoint that is down, a process that is killed, or a disk that is briefly locked loses
nothing: the item waits and the loop retries it. What a channel does with one item is its
``send`` function, which answers with a :class:`Outcome`; the loop does the rest (order,
acking, back-off, waking, stopping).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adedge.runtime.serve.store import EventStore, OutboxItem

IDLE_POLL_S = 1.0  # look at the outbox this often even when nobody called wake()
BATCH = 100  # outbox rows read at a time
ERROR_BACKOFF_S = 1.0  # first wait after an unexpected error (the store, a bug in send)
ERROR_BACKOFF_CAP_S = 30.0


class Outcome(Enum):
    """What became of one item: ``delivered`` (the receiver acknowledged it: ack),
    ``refused`` (the receiver will never take it: ack so it does not block the line),
    ``retry`` (try the same item again after the back-off), ``paused`` (the channel is not
    connected: wait until it says it is, via wake(), then resume from the oldest)."""

    DELIVERED = "delivered"
    REFUSED = "refused"
    RETRY = "retry"
    PAUSED = "paused"


class Backoff:
    """Exponential delay: ``first``, doubling up to ``cap``; ``reset`` after a success."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = max(cap, first)
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2.0, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


class OutboxWorker:
    """One daemon thread per channel. ``send`` must not raise for a receiver's failure (it
    answers ``retry``); if it raises anyway, the loop logs one line and backs off."""

    def __init__(
        self,
        name: str,
        store: EventStore,
        channel: str,
        send: Callable[[OutboxItem], Outcome],
        log: Callable[[str], None],
        backoff: Backoff,
    ) -> None:
        self.name = name
        self.channel = channel
        self.delivered = 0
        self.refused = 0
        self.failures = 0  # attempts answered retry, plus unexpected errors
        self._store = store
        self._send = send
        self._log = log
        self._backoff = backoff
        self._error_backoff = Backoff(ERROR_BACKOFF_S, ERROR_BACKOFF_CAP_S)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New items (or a new connection): look at the outbox now."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the item in hand (waits are interrupted at once)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped first; True when stopped."""
        return self._stopping.wait(seconds)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(IDLE_POLL_S)
            self._wake.clear()
            try:
                self._drain()
                self._error_backoff.reset()
            except Exception as error:  # the store or a bug: never end the thread
                self.failures += 1
                delay = self._error_backoff.next()
                self._log(
                    f"{self.name}: delivery error ({type(error).__name__}: {error}); "
                    f"retrying in {delay:g} s"
                )
                self.sleep(delay)

    def _drain(self) -> None:
        """Send pending items oldest first until the outbox is empty or the channel pauses."""
        while not self._stopping.is_set():
            items = self._store.pending(self.channel, limit=BATCH)
            if not items:
                return
            for item in items:
                outcome = self._send_until_settled(item)
                if outcome is Outcome.PAUSED or outcome is None:
                    return
                self._store.ack(self.channel, item.id)
                if outcome is Outcome.DELIVERED:
                    self.delivered += 1
                else:
                    self.refused += 1

    def _send_until_settled(self, item: OutboxItem) -> Outcome | None:
        """Delivered or refused; ``paused``; or None when stopped while retrying."""
        while not self._stopping.is_set():
            outcome = self._send(item)
            if outcome is not Outcome.RETRY:
                if outcome is not Outcome.PAUSED:
                    self._backoff.reset()
                return outcome
            self.failures += 1
            if self.sleep(self._backoff.next()):
                return None
        return None
