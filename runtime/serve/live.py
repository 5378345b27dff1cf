"""What a camera keeps for the live view: its newest scored frame and its recent scores.

The camera thread :meth:`~LiveBuffer.put`\\ s every scored frame (a reference, no copy: the
frame is not written to afterwards); the HTTP threads read :meth:`~LiveBuffer.latest` and
:meth:`~LiveBuffer.history`. Keeping the newest frame costs one reference; the score ring
holds the last :data:`HISTORY_POINTS` scores, enough for the console's sparkline, the
histogram of normal scores under the threshold and an open event's score chart. A
camera's input and scored fps (:class:`Rate`) are kept the same way, over a short window.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from adedge.runtime.regions import Region
from adedge.runtime.serve.api_types import LiveFrame, ScorePoint

HISTORY_POINTS = 4096
RATE_WINDOW_S = 5.0  # a camera's input and scored fps are over this many seconds


class LiveBuffer:
    """The newest scored frame and the recent (time, score, alarm) points of one camera."""

    def __init__(self, points: int = HISTORY_POINTS) -> None:
        self._lock = threading.Lock()
        self._latest: LiveFrame | None = None
        self._points: deque[tuple[float, float, bool]] = deque(maxlen=points)
        self._seq = 0
        self._new = threading.Condition(self._lock)

    def put(
        self,
        wall: float,
        image: np.ndarray,
        amap: np.ndarray | None,
        score: float,
        threshold: float,
        alarm: bool,
        regions: list[Region] | None = None,
    ) -> None:
        with self._lock:
            self._seq += 1
            self._latest = LiveFrame(self._seq, wall, image, amap, score, threshold, alarm, regions)
            self._points.append((wall, score, alarm))
            self._new.notify_all()

    def latest(self) -> LiveFrame | None:
        with self._lock:
            return self._latest

    def wait_newer(self, seq: int, timeout: float) -> LiveFrame | None:
        """The newest frame once its seq is past ``seq`` (None after ``timeout``)."""
        with self._lock:
            self._new.wait_for(lambda: self._latest is not None and self._latest.seq > seq, timeout)
            latest = self._latest
            return latest if latest is not None and latest.seq > seq else None

    def history(self, since: float | None = None) -> list[ScorePoint]:
        with self._lock:
            points = list(self._points)
        return [
            ScorePoint(t=t, score=s, alarm=a) for t, s, a in points if since is None or t >= since
        ]


class Rate:
    """Events per second over the last RATE_WINDOW_S seconds."""

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def tick(self, now: float) -> None:
        self.times.append(now)
        self._trim(now)

    def value(self, now: float) -> float:
        self._trim(now)
        if len(self.times) < 2:
            return 0.0
        span = max(now - self.times[0], 1e-6)
        return (len(self.times) - 1) / span if now - self.times[-1] < RATE_WINDOW_S else 0.0

    def _trim(self, now: float) -> None:
        while self.times and now - self.times[0] > RATE_WINDOW_S:
            self.times.popleft()
