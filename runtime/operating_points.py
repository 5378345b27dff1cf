"""Operating points of a detector: what a threshold does on labelled scores, and thresholds
chosen by a rule (numpy only, no torch, no scikit-learn).

Everywhere in adedge a frame is anomalous when ``score > threshold`` (the Detector, ``rates_at``,
the stream), so every threshold here is meant for ``>``. The curve's thresholds are the
decision boundaries between adjacent distinct scores: scores that are equal are always on
the same side (ties move together), and each boundary lies midway between two adjacent
distinct scores, so a score that moves by less than half the gap (another backend, another
thread count) keeps its decision. The first point flags nothing (threshold = the highest
score), the last flags everything (just below the lowest).

Three rules choose a threshold: the percentile of held-out *normal* scores (what export
writes into the card: it sets the false-alarm rate and needs no anomalies), the F1-optimal
threshold on labelled data (anomalib's adaptive threshold), and the lowest false-alarm rate
that still catches a target share of anomalies (target TPR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from adedge.metrics import quantile_threshold


@dataclass(frozen=True)
class OperatingPoint:
    """Counts and rates at one threshold (anomalous = ``score > threshold``).

    ``precision`` is NaN where nothing is flagged (undefined; ``to_dict`` writes None)."""

    name: str
    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def tpr(self) -> float:
        return self.tp / max(self.tp + self.fn, 1)

    @property
    def fpr(self) -> float:
        return self.fp / max(self.fp + self.tn, 1)

    @property
    def precision(self) -> float:
        flagged = self.tp + self.fp
        return self.tp / flagged if flagged else math.nan

    @property
    def f1(self) -> float:
        return 2 * self.tp / max(2 * self.tp + self.fp + self.fn, 1)

    def to_dict(self) -> dict[str, Any]:
        precision = self.precision
        return {
            "name": self.name,
            "threshold": self.threshold,
            "tpr": self.tpr,
            "fpr": self.fpr,
            "precision": None if math.isnan(precision) else precision,
            "f1": self.f1,
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
        }


@dataclass(frozen=True)
class Curve:
    """Every distinct decision on the scores, from "flag nothing" to "flag everything":
    ``thresholds`` decreasing, ``tp``/``fp`` the counts flagged at each (non-decreasing)."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    negatives: int

    @property
    def tpr(self) -> np.ndarray:
        return self.tp / max(self.positives, 1)

    @property
    def fpr(self) -> np.ndarray:
        return self.fp / max(self.negatives, 1)

    @property
    def precision(self) -> np.ndarray:
        """tp / flagged; NaN where nothing is flagged."""
        flagged = self.tp + self.fp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(flagged > 0, self.tp / np.maximum(flagged, 1), np.nan)

    @property
    def f1(self) -> np.ndarray:
        return 2 * self.tp / np.maximum(2 * self.tp + self.fp + (self.positives - self.tp), 1)

    def point(self, index: int, name: str) -> OperatingPoint:
        tp, fp = int(self.tp[index]), int(self.fp[index])
        return OperatingPoint(
            name=name,
            threshold=float(self.thresholds[index]),
            tp=tp,
            fp=fp,
            tn=self.negatives - fp,
            fn=self.positives - tp,
        )


def check_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels as bool and scores as float64, of one length, scores finite."""
    flags = np.asarray(labels).astype(bool).reshape(-1)
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if flags.shape != values.shape:
        raise ValueError(f"{len(flags)} labels for {len(values)} scores")
    if len(values) == 0:
        raise ValueError("no scores")
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite (the model gave NaN or inf)")
    return flags, values


def boundary(upper: float, lower: float) -> float:
    """A threshold t with lower <= t < upper (so ``>`` flags ``upper`` and not ``lower``),
    midway between them where the floats allow."""
    middle = lower + (upper - lower) / 2.0
    return middle if lower <= middle < upper else lower


def curve(labels: Any, scores: Any) -> Curve:
    """The ROC (and precision/F1) at every distinct decision the scores allow; exact on ties."""
    flags, values = check_scores(labels, scores)
    order = np.argsort(-values, kind="mergesort")
    ordered, hits = values[order], flags[order]
    # the last index of each run of equal scores: a threshold below a run flags it whole
    ends = np.r_[np.flatnonzero(ordered[1:] != ordered[:-1]), len(ordered) - 1]
    distinct = ordered[ends]
    tp = np.cumsum(hits)[ends]
    fp = (ends + 1) - tp
    below = [boundary(distinct[i], distinct[i + 1]) for i in range(len(distinct) - 1)]
    bottom = float(np.nextafter(distinct[-1], -np.inf))
    thresholds = np.array([distinct[0], *below, bottom], dtype=np.float64)
    positives = int(flags.sum())
    return Curve(
        thresholds=thresholds,
        tp=np.r_[0, tp].astype(np.int64),
        fp=np.r_[0, fp].astype(np.int64),
        positives=positives,
        negatives=len(flags) - positives,
    )


def point_at(labels: Any, scores: Any, threshold: float, name: str = "") -> OperatingPoint:
    """The counts at ``threshold`` itself (anomalous = ``score > threshold``)."""
    flags, values = check_scores(labels, scores)
    flagged = values > threshold
    return OperatingPoint(
        name=name,
        threshold=float(threshold),
        tp=int((flagged & flags).sum()),
        fp=int((flagged & ~flags).sum()),
        tn=int((~flagged & ~flags).sum()),
        fn=int((~flagged & flags).sum()),
    )


def decisions_point(labels: Any, flagged: Any, threshold: float, name: str) -> OperatingPoint:
    """The counts of decisions made otherwise than by ``score > threshold`` alone (e.g. the
    Detector's pixel decisions on top of it); ``threshold`` is the image threshold used."""
    flags = np.asarray(labels).astype(bool).reshape(-1)
    marked = np.asarray(flagged).astype(bool).reshape(-1)
    if flags.shape != marked.shape:
        raise ValueError(f"{len(flags)} labels for {len(marked)} decisions")
    return OperatingPoint(
        name=name,
        threshold=float(threshold),
        tp=int((marked & flags).sum()),
        fp=int((marked & ~flags).sum()),
        tn=int((~marked & ~flags).sum()),
        fn=int((~marked & flags).sum()),
    )


def needs_both(roc: Curve, rule: str) -> None:
    if roc.positives == 0 or roc.negatives == 0:
        raise ValueError(f"the {rule} threshold needs both normal and anomalous scores")


def f1_optimal(roc: Curve, name: str = "f1") -> OperatingPoint:
    """The point of highest F1; among equal F1, the highest threshold (fewest alarms)."""
    needs_both(roc, "F1-optimal")
    return roc.point(int(np.argmax(roc.f1)), name)


def check_target(target: float) -> float:
    if not (isinstance(target, (int, float)) and 0.0 < target <= 1.0):
        raise ValueError(f"a target TPR must lie in (0, 1], got {target!r}")
    return float(target)


def target_tpr(roc: Curve, target: float, name: str | None = None) -> OperatingPoint:
    """The lowest false-alarm rate with TPR >= ``target``; at that FPR, the highest TPR."""
    target = check_target(target)
    needs_both(roc, "target-TPR")
    # TPR counts are compared as integers: 0.9 of 10 anomalies means 9, not 9.000000000000002
    needed = math.ceil(target * roc.positives - 1e-9)
    reached = np.flatnonzero(roc.tp >= needed)
    fewest = roc.fp[reached[0]]
    index = int(np.flatnonzero(roc.fp == fewest)[-1])
    return roc.point(index, name or f"tpr>={target:g}")


def normal_percentile(normal_scores: Any, quantile: float) -> float:
    """The threshold export writes: ``quantile`` of held-out normal scores lie at or below it
    (numpy's linear interpolation, as :func:`adedge.metrics.quantile_threshold`)."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"a normal quantile must lie in (0, 1], got {quantile!r}")
    values = np.asarray(normal_scores, dtype=np.float64).reshape(-1)
    if len(values) == 0 or not np.all(np.isfinite(values)):
        raise ValueError("the normal percentile needs finite normal scores")
    return quantile_threshold(values, quantile)
