"""Where a camera's news goes: the event store first (so nothing is lost), then the
delivery channels (MQTT, webhooks) are woken, and the live topics and metrics are set.

Cameras talk to one :class:`Hub`; it knows which outlets this service has (no MQTT
configured: no MQTT calls), so camera code has no ``if mqtt`` of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from adedge.runtime.serve.event_types import Event, MessageType
from adedge.runtime.serve.metrics import ServiceMetrics
from adedge.runtime.serve.stats import CameraState
from adedge.runtime.serve.store import EventStore

Log = Callable[[str], None]


class Channel(Protocol):
    """A delivery channel draining the store's outbox (MQTT, a webhook)."""

    def wake(self) -> None: ...


class LiveTopics(Protocol):
    """The MQTT link's per-camera topics (retained state and status, scores, snapshot)."""

    def publish_state(self, camera: str, alarm: bool) -> None: ...

    def publish_status(self, camera: str, status: str) -> None: ...

    def publish_score(self, camera: str, score: float, wall: float) -> None: ...

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None: ...

    def report(self, camera: str, what: str, value: str) -> None: ...


class Hub:
    """The service's outlets, shared by every camera thread (thread-safe)."""

    def __init__(self, store: EventStore, metrics: ServiceMetrics, log: Log) -> None:
        self.store = store
        self.metrics = metrics
        self.log = log
        self.channels: list[Channel] = []
        self.live: LiveTopics | None = None
        self._lock = threading.Lock()

    def attach(self, channels: Sequence[Channel], live: LiveTopics | None) -> None:
        self.channels = list(channels)
        self.live = live

    def publish(self, event: Event, kind: MessageType) -> dict[str, Any]:
        """Commit the event's message to the store (the outbox of every channel), then
        wake the channels; evidence over the media cap is pruned, oldest first."""
        message = self.store.record(event, kind)
        if kind is MessageType.NEW:
            self.metrics.event(event.camera)
        for channel in self.channels:
            channel.wake()
        if kind is not MessageType.UPDATE:
            with self._lock:  # one pruning pass at a time
                pruned = self.store.enforce_cap()
            if pruned:
                self.log(f"storage cap: pruned the media of {len(pruned)} oldest event(s)")
        return message

    def status(self, camera: str, state: CameraState) -> None:
        self.metrics.camera_state(camera, state)
        if self.live is not None:
            self.live.publish_status(camera, state.value)

    def alarm(self, camera: str, on: bool) -> None:
        self.metrics.alarm(camera, on)
        if self.live is not None:
            self.live.publish_state(camera, on)

    def score(self, camera: str, score: float, wall: float) -> None:
        if self.live is not None:
            self.live.publish_score(camera, score, wall)

    def snapshot(self, camera: str, jpeg: bytes) -> None:
        if self.live is not None:
            self.live.publish_snapshot(camera, jpeg)

    def report(self, camera: str, what: str, value: str) -> None:
        if self.live is not None:
            self.live.report(camera, what, value)
