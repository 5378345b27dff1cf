"""From scored frames to events: the alarm rule and an event's life.

The rule (:class:`AlarmRule` in the config): an alarm fires when ``k`` of the last ``n``
scored frames are above the threshold, so a single noisy frame raises nothing and a defect
that flickers across frames still does. The event it opens (``new``) follows the score:
``update`` when its peak rises (at most once per ``UPDATE_INTERVAL_S``, so a slowly rising
score does not flood a broker; the latest peak is always in the next message), and ``end``
once the score has stayed below ``threshold - hysteresis`` for ``cooldown_s`` seconds. The
hysteresis keeps a score hovering at the threshold from ending and reopening an event on
every frame.

:class:`EventLifecycle` is pure logic: it takes (wall time, score, threshold) and returns
what happened; the camera worker turns that into messages, evidence and MQTT state. Times
are the frames' wall clock, so the same frames give the same events.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum

from adedge.runtime.serve.config import AlarmRule

UPDATE_INTERVAL_S = 1.0


class Transition(str, Enum):
    """What one frame did to the camera's event."""

    NONE = "none"
    OPENED = "opened"  # the rule fired: a new event
    PEAK = "peak"  # the open event's peak rose (send an update now)
    PEAK_HELD = "peak_held"  # the peak rose, the update waits for UPDATE_INTERVAL_S
    ENDED = "ended"  # the cooldown passed


@dataclass
class OpenEvent:
    """The event in progress: its start, peak (score, wall time) and frames so far."""

    start: float
    peak_score: float
    peak_time: float
    frames: int = 1
    low_since: float | None = None  # when the score last fell below the release level
    last_update: float = -math.inf
    unsent_peak: bool = False


class EventLifecycle:
    """The alarm rule and the event it opens, for one camera (see the module docstring)."""

    def __init__(self, rule: AlarmRule) -> None:
        self.rule = rule
        self.window: deque[bool] = deque(maxlen=rule.n)
        self.event: OpenEvent | None = None
        self.ended: OpenEvent | None = None  # the event the last ENDED transition closed

    @property
    def active(self) -> bool:
        return self.event is not None

    def set_rule(self, rule: AlarmRule) -> None:
        """A new rule at run time: the window restarts at the new ``n``."""
        self.rule = rule
        self.window = deque(self.window, maxlen=rule.n)

    def observe(
        self, wall: float, score: float, threshold: float, flagged: bool = False
    ) -> Transition:
        """Take one scored frame; a score that is not a number counts as normal.
        ``flagged``: the frame is anomalous whatever its score (a heatmap region above the
        pixel threshold): it counts as above the threshold and holds an open event."""
        above = flagged or (math.isfinite(score) and score > threshold)
        self.window.append(above)
        event = self.event
        if event is None:
            if sum(self.window) >= self.rule.k:
                self.event = OpenEvent(wall, score, wall, last_update=wall)
                return Transition.OPENED
            return Transition.NONE
        event.frames += 1
        rose = math.isfinite(score) and score > event.peak_score
        if rose:
            event.peak_score, event.peak_time = score, wall
            event.unsent_peak = True
        released = not flagged and (
            not math.isfinite(score) or score < threshold - self.rule.hysteresis
        )
        if not released:
            event.low_since = None
        elif event.low_since is None:
            event.low_since = wall
        if event.low_since is not None and wall - event.low_since >= self.rule.cooldown_s:
            self.event, self.ended = None, event
            self.window.clear()  # the next event needs k fresh anomalous frames
            return Transition.ENDED
        if event.unsent_peak:
            if wall - event.last_update >= UPDATE_INTERVAL_S:
                event.last_update, event.unsent_peak = wall, False
                return Transition.PEAK
            return Transition.PEAK_HELD if rose else Transition.NONE
        return Transition.NONE

    def close(self) -> OpenEvent | None:
        """End the event now (shutdown, camera lost); returns it, or None if none was open."""
        event, self.event = self.event, None
        self.window.clear()
        return event
