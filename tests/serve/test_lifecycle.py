"""The alarm rule (k of the last n frames) and an event's life (peak updates, hysteresis,
cooldown), on score sequences whose outcome is certain."""

from __future__ import annotations

import math

import pytest

from adedge.runtime.serve.config import AlarmRule
from adedge.runtime.serve.lifecycle import UPDATE_INTERVAL_S, EventLifecycle, Transition

pytestmark = pytest.mark.runtime

T = 1.0  # threshold


def run(rule: AlarmRule, scores: list[float], period: float = 0.1) -> list[Transition]:
    life = EventLifecycle(rule)
    return [life.observe(i * period, s, T) for i, s in enumerate(scores)]


def test_k_of_n_fires_on_the_kth_anomalous_frame_in_the_window() -> None:
    rule = AlarmRule(k=3, n=5, cooldown_s=10)
    # 2 anomalous, 2 normal, then 1 more: 3 of the last 5 -> fires at index 4
    got = run(rule, [2, 2, 0, 0, 2, 2])
    assert got[:4] == [Transition.NONE] * 4
    assert got[4] is Transition.OPENED


def test_isolated_anomalous_frames_never_fire() -> None:
    rule = AlarmRule(k=2, n=3)
    assert Transition.OPENED not in run(rule, [2, 0, 0, 2, 0, 0, 2, 0, 0, 2])


def test_event_ends_after_cooldown_below_threshold_minus_hysteresis() -> None:
    rule = AlarmRule(k=1, n=1, cooldown_s=0.25, hysteresis=0.2)
    life = EventLifecycle(rule)
    assert life.observe(0.0, 2.0, T) is Transition.OPENED
    # 0.9 is below the threshold but not below threshold - hysteresis: the event holds
    for i in range(1, 10):
        assert life.observe(i * 0.1, 0.9, T) is not Transition.ENDED
    assert life.active
    # 0.5 is below 0.8: the cooldown runs from the first such frame
    assert life.observe(1.0, 0.5, T) is Transition.NONE
    assert life.observe(1.1, 0.5, T) is Transition.NONE
    assert life.observe(1.2, 0.5, T) is Transition.NONE
    assert life.observe(1.3, 0.5, T) is Transition.ENDED
    assert not life.active
    assert life.ended is not None and life.ended.frames == 14


def test_a_high_frame_during_cooldown_restarts_it() -> None:
    life = EventLifecycle(AlarmRule(k=1, n=1, cooldown_s=0.3))
    life.observe(0.0, 2.0, T)
    life.observe(0.1, 0.0, T)
    life.observe(0.3, 0.0, T)
    life.observe(0.35, 1.5, T)  # back above: the cooldown starts again
    assert life.observe(0.5, 0.0, T) is Transition.NONE
    assert life.observe(0.7, 0.0, T) is Transition.NONE
    assert life.observe(0.8, 0.0, T) is Transition.ENDED


def test_peak_updates_are_rate_limited_and_none_is_lost() -> None:
    life = EventLifecycle(AlarmRule(k=1, n=1, cooldown_s=60))
    assert life.observe(0.0, 1.5, T) is Transition.OPENED
    # rises within the interval are held, then sent once the interval has passed
    assert life.observe(0.2, 1.6, T) is Transition.PEAK_HELD
    assert life.observe(0.4, 1.7, T) is Transition.PEAK_HELD
    assert life.observe(0.6, 1.2, T) is Transition.NONE
    assert life.observe(UPDATE_INTERVAL_S, 1.2, T) is Transition.PEAK
    assert life.event is not None and life.event.peak_score == 1.7
    assert life.event.peak_time == 0.4
    assert life.observe(UPDATE_INTERVAL_S + 0.1, 1.0, T) is Transition.NONE


def test_nan_scores_count_as_normal_and_end_events() -> None:
    life = EventLifecycle(AlarmRule(k=1, n=1, cooldown_s=0.0))
    assert life.observe(0.0, math.nan, T) is Transition.NONE
    assert life.observe(0.1, 2.0, T) is Transition.OPENED
    assert life.observe(0.2, math.nan, T) is Transition.ENDED


def test_after_an_event_the_next_needs_k_fresh_frames() -> None:
    life = EventLifecycle(AlarmRule(k=2, n=3, cooldown_s=0.0))
    assert [life.observe(t, s, T) for t, s in [(0, 2), (1, 2)]][-1] is Transition.OPENED
    assert life.observe(2, 0, T) is Transition.ENDED
    assert life.observe(3, 2, T) is Transition.NONE  # one fresh anomalous frame only
    assert life.observe(4, 2, T) is Transition.OPENED


def test_close_returns_the_open_event() -> None:
    life = EventLifecycle(AlarmRule(k=1, n=1))
    assert life.close() is None
    life.observe(0.0, 3.0, T)
    closed = life.close()
    assert closed is not None and closed.peak_score == 3.0 and not life.active
