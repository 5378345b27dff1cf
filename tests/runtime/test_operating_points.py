"""Operating points on hand-made scores whose ROC, F1-optimal and target-TPR thresholds are
known by hand; ties move together; every threshold means ``score > threshold``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adedge.metrics import auroc, quantile_threshold
from adedge.runtime.operating_points import (
    boundary,
    curve,
    f1_optimal,
    normal_percentile,
    point_at,
    target_tpr,
)

pytestmark = pytest.mark.runtime

# 6 scores, 3 anomalous; by hand: F1 is best (6/7) flagging 0.6, 0.5, 0.4 and 0.3
SCORES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
LABELS = np.array([0, 0, 1, 0, 1, 1])


def test_known_roc_and_thresholds() -> None:
    roc = curve(LABELS, SCORES)
    assert roc.thresholds[:6] == pytest.approx([0.6, 0.55, 0.45, 0.35, 0.25, 0.15])
    assert roc.thresholds[6] < 0.1
    assert roc.tpr == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert roc.fpr == pytest.approx([0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert np.isnan(roc.precision[0]) and roc.precision[1:] == pytest.approx(
        [1, 1, 2 / 3, 3 / 4, 3 / 5, 1 / 2]
    )
    assert np.trapezoid(roc.tpr, roc.fpr) == pytest.approx(auroc(LABELS, SCORES))


def test_known_f1_optimal_and_target_tpr() -> None:
    roc = curve(LABELS, SCORES)
    best = f1_optimal(roc)
    assert best.threshold == pytest.approx(0.25)
    assert (best.tp, best.fp, best.tn, best.fn) == (3, 1, 2, 0)
    assert best.f1 == pytest.approx(6 / 7) and best.precision == pytest.approx(0.75)
    half = target_tpr(roc, 0.5)  # 2 of 3 anomalies without a false alarm
    assert half.threshold == pytest.approx(0.45) and (half.tp, half.fp) == (2, 0)
    assert half.name == "tpr>=0.5"
    for target in (0.9, 1.0):
        point = target_tpr(roc, target)
        assert point.threshold == pytest.approx(0.25) and (point.tpr, point.fpr) == (1.0, 1 / 3)
    # 2/3 of 3 anomalies is 2, not 2.0000000000000004: the integer count decides
    assert target_tpr(roc, 2 / 3).tp == 2


def test_ties_move_together() -> None:
    scores = np.array([0.5, 0.5, 0.5, 0.2, 0.9])
    labels = np.array([1, 0, 1, 0, 1])
    roc = curve(labels, scores)
    assert list(roc.tp) == [0, 1, 3, 3] and list(roc.fp) == [0, 0, 1, 2]
    assert f1_optimal(roc).threshold == pytest.approx(0.35)
    # the three 0.5s are flagged together or not at all, and a threshold equal to a score
    # does not flag it (score > threshold)
    at = point_at(labels, scores, 0.5)
    assert (at.tp, at.fp) == (1, 0)
    assert math.isnan(point_at(labels, scores, 0.9).precision)
    assert point_at(labels, scores, 0.9).to_dict()["precision"] is None


def test_every_curve_point_is_what_its_threshold_does() -> None:
    """Many ties (scores rounded to 0.1): each threshold of the curve, applied with ``>``,
    gives exactly the counts of its point; the curve equals scikit-learn's ROC."""
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1).astype(np.float32)
    roc = curve(labels, scores)
    assert np.all(np.diff(roc.thresholds) < 0)
    for i, threshold in enumerate(roc.thresholds):
        point = point_at(labels, scores, threshold)
        assert (point.tp, point.fp) == (roc.tp[i], roc.fp[i])
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert roc.fpr == pytest.approx(fpr) and roc.tpr == pytest.approx(tpr)
    assert roc.point(0, "none").tp == 0 and roc.point(len(roc.tp) - 1, "all").tn == 0


def test_f1_ties_pick_the_fewest_alarms() -> None:
    # flagging {0.9} (tp 1, fn 1) and {0.9, 0.8, 0.7, 0.6} (tp 2, fp 2) both give F1 2/3
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.1])
    labels = np.array([1, 0, 0, 1, 0])
    roc = curve(labels, scores)
    assert roc.f1[1] == roc.f1[4] == max(roc.f1)
    assert f1_optimal(roc).threshold == pytest.approx(0.85)


def test_boundary_between_adjacent_floats() -> None:
    lower = 1.0
    upper = float(np.nextafter(lower, 2.0))
    threshold = boundary(upper, lower)
    assert lower <= threshold < upper and upper > threshold and not lower > threshold


def test_normal_percentile_is_the_export_rule() -> None:
    normal = np.random.default_rng(1).normal(size=200)
    threshold = normal_percentile(normal, 0.99)
    assert threshold == quantile_threshold(normal, 0.99)
    assert (normal > threshold).mean() <= 0.01


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5, float("nan")])
def test_target_outside_zero_one_is_refused(target) -> None:
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        target_tpr(curve(LABELS, SCORES), target)


def test_refusals() -> None:
    with pytest.raises(ValueError, match="both normal and anomalous"):
        f1_optimal(curve(np.zeros(4), SCORES[:4]))
    with pytest.raises(ValueError, match="finite"):
        curve(LABELS, np.r_[SCORES[:5], np.nan])
    with pytest.raises(ValueError, match="labels for"):
        curve(LABELS[:3], SCORES)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        normal_percentile(SCORES, 0.0)
