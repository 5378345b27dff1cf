"""Detection metrics in numpy (no scikit-learn at run time): AUROC, rates at a threshold."""

from __future__ import annotations

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of the flattened values (float64), ties sharing their mean rank (equal
    infinities tie too); one vectorised pass, so millions of heatmap pixels rank quickly."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_mask = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts_mask) - 1
    starts = np.flatnonzero(starts_mask)
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ((starts + ends - 1) / 2.0 + 1.0)[group]
    return ranks


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U); labels 1 = anomalous, higher = more so."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("AUROC needs both normal and anomalous samples")
    ranks = average_ranks(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def rates_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """TPR (anomalies flagged), TNR (normals passed), accuracy and F1 at ``score > threshold``."""
    labels = np.asarray(labels).astype(bool)
    flagged = np.asarray(scores) > threshold
    tp = int((flagged & labels).sum())
    tn = int((~flagged & ~labels).sum())
    fp = int((flagged & ~labels).sum())
    fn = int((~flagged & labels).sum())
    tpr = tp / max(tp + fn, 1)
    precision = tp / max(tp + fp, 1)
    return {
        "tpr": tpr,
        "tnr": tn / max(tn + fp, 1),
        "accuracy": (tp + tn) / max(len(labels), 1),
        "f1": 2 * precision * tpr / max(precision + tpr, 1e-12),
    }


def quantile_threshold(normal_scores: np.ndarray, quantile: float = 0.99) -> float:
    """A threshold that lets ``quantile`` of held-out normal scores pass."""
    return float(np.quantile(np.asarray(normal_scores, dtype=np.float64), quantile))


def pixel_auroc(maps: list[np.ndarray], masks: list[np.ndarray | None]) -> float | None:
    """AUROC of every pixel's heatmap value against its defect mask, over all images with a
    mask (MVTec's pixel-level AUROC); None without both classes of pixel."""
    values, truth = [], []
    for amap, mask in zip(maps, masks, strict=True):
        if mask is None:
            continue
        if amap.shape != mask.shape:
            raise ValueError(f"heatmap {amap.shape} and mask {mask.shape} differ in size")
        values.append(amap.reshape(-1))
        truth.append(mask.reshape(-1))
    if not values:
        return None
    labels = np.concatenate(truth).astype(np.int64)
    if labels.min() == labels.max():
        return None
    return auroc(labels, np.concatenate(values))
