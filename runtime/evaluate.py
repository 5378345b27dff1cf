"""`adedge eval`: a bundle's detection quality on a labelled test split, through the runtime.

Scores come from the same Detector the stream uses (ONNX graph, card preprocessing), so the
numbers are those a deployment would see. Beside AUROC, the operating points
(:mod:`adedge.runtime.operating_points`) say what a threshold does: the card's, the
F1-optimal one, and the lowest false-alarm rate reaching each target TPR. Where the
detector also decides on the heatmap (the card's pixel threshold), one more point says what
its own decision does (score above the threshold, or a region larger than the minimum area);
the other points are the image score's alone.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from adedge.data import DataSet, Split
from adedge.errors import DataError
from adedge.metrics import auroc, pixel_auroc, rates_at
from adedge.runtime.detector import Detector
from adedge.runtime.frames import run_in_chunks
from adedge.runtime.operating_points import (
    OperatingPoint,
    check_target,
    curve,
    decisions_point,
    f1_optimal,
    point_at,
    target_tpr,
)

DEFAULT_TARGETS = (0.90, 0.95, 0.99)


def score_split(detector: Detector, images: list[np.ndarray], batch: int = 256) -> np.ndarray:
    """Scores (N,) of ``images``, handed to the detector ``batch`` at a time."""

    def run(part: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {"score": detector.score_images(part)[0]}

    return run_in_chunks(run, images, batch, ["score"])["score"]


def score_split_with_pixels(
    detector: Detector, test: Split, batch: int = 32
) -> tuple[np.ndarray, float | None]:
    """Scores, and the pixel AUROC of the heatmaps against the split's defect masks."""
    scores, pixels_auc, _ = score_split_with_maps(detector, test, batch, regions=False)
    return scores, pixels_auc


def score_split_with_maps(
    detector: Detector, test: Split, batch: int = 32, regions: bool = True
) -> tuple[np.ndarray, float | None, np.ndarray | None]:
    """Scores; the pixel AUROC of the heatmaps against the split's defect masks (None without
    masks); and, with ``regions`` where the detector makes pixel decisions, whether each
    image has a heatmap region that makes it anomalous (None otherwise)."""
    scores, pixels_auc = [], None
    values: list[np.ndarray] = []
    masks: list[np.ndarray | None] = []
    flags: list[bool] | None = [] if regions and detector.pixel is not None else None
    for i in range(0, len(test), batch):
        part, maps, _ = detector.score_images_with_maps(test.images[i : i + batch])
        scores.append(part)
        if test.masks:
            values.extend(maps or [])
            masks.extend(test.masks[i : i + batch])
        if flags is not None:
            flags.extend(bool(detector.regions(m)) for m in maps or [None] * len(part))
    if values:
        pixels_auc = pixel_auroc(values, masks)
    return np.concatenate(scores), pixels_auc, None if flags is None else np.array(flags, bool)


def detection_quality(detector: Detector, test: Split) -> dict[str, float]:
    """Image AUROC on a labelled split, and pixel AUROC where masks and heatmaps exist."""
    if detector.has_maps and test.masks:
        scores, pixels = score_split_with_pixels(detector, test)
    else:
        scores, pixels = score_split(detector, test.images), None
    result = {"test_auroc": auroc(test.labels, scores)}
    if pixels is not None:
        result["test_pixel_auroc"] = pixels
    return result


def operating_points(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    threshold_name: str = "card",
    targets: tuple[float, ...] = DEFAULT_TARGETS,
) -> list[OperatingPoint]:
    """The point at ``threshold``, the F1-optimal one, and one per target TPR."""
    targets = tuple(check_target(t) for t in targets)
    roc = curve(labels, scores)
    points = [point_at(labels, scores, threshold, threshold_name), f1_optimal(roc)]
    return points + [target_tpr(roc, target) for target in targets]


def evaluate(
    detector: Detector,
    dataset: DataSet,
    batch: int = 256,
    targets: tuple[float, ...] = DEFAULT_TARGETS,
) -> dict[str, Any]:
    """AUROC, rates at the detector's threshold and the operating points (see
    :func:`evaluate_scores`, which also returns the labels and scores)."""
    return evaluate_scores(detector, dataset, batch, targets)[0]


def evaluate_scores(
    detector: Detector,
    dataset: DataSet,
    batch: int = 256,
    targets: tuple[float, ...] = DEFAULT_TARGETS,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The evaluation's results, and the test labels and scores they came from (for plots)."""
    targets = tuple(check_target(t) for t in targets)  # before the work
    test = dataset.test
    if test is None or len(test) == 0:
        raise DataError(
            f"'{dataset.spec}' has no labelled test split",
            "use a built-in set with anomaly=N, or a folder with test/good and test/<defect>",
        )
    if not 0 < test.labels.sum() < len(test):
        raise DataError(
            f"the test split of '{dataset.spec}' needs both normal and anomalous images",
            "add test/good and at least one test/<defect> folder",
        )
    started = time.perf_counter()
    pixels, regions = None, None
    if detector.has_maps and (test.masks or detector.pixel is not None):
        scores, pixels, regions = score_split_with_maps(detector, test)
    else:
        scores = score_split(detector, test.images, batch)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "model": str(detector.bundle.path),
        "method": detector.card.method,
        "data": dataset.spec,
        "protocol": dataset.protocol,
        "n_test": len(test),
        "n_anomalous": int(test.labels.sum()),
        "auroc": auroc(test.labels, scores),
        "threshold": detector.threshold,
        "threshold_method": detector.card.threshold.method,
        **rates_at(test.labels, scores, detector.threshold),
        "images_per_second": len(test) / seconds if seconds > 0 else None,
        "backend": detector.backend_name,
    }
    if pixels is not None:
        result["pixel_auroc"] = pixels
    own = detector.threshold == detector.card.threshold.value
    points = operating_points(
        test.labels, scores, detector.threshold, "card" if own else "--threshold", targets
    )
    if regions is not None:  # the detector's own decision: score > threshold or a region
        by_score = np.asarray(scores) > detector.threshold
        name = f"{points[0].name}+pixel"
        point = decisions_point(test.labels, by_score | regions, detector.threshold, name)
        points.insert(1, point)
        anomalous = test.labels.astype(bool)
        result["pixel_decisions"] = {
            "rule": detector.pixel.describe(),
            "flagged_by_regions": int(regions.sum()),
            "anomalous_caught_only_by_regions": int((regions & ~by_score & anomalous).sum()),
        }
    result["operating_points"] = [point.to_dict() for point in points]
    kinds = sorted(set(test.kinds)) if test.kinds else []
    per_kind = {}
    normal = test.labels == 0
    for kind in kinds:
        mask = np.array([k == kind for k in test.kinds])
        if test.labels[mask].any():
            subset = mask | normal
            per_kind[kind] = auroc(test.labels[subset], scores[subset])
    if len(per_kind) > 1:
        result["auroc_per_kind"] = per_kind
    return result, np.asarray(test.labels), np.asarray(scores, dtype=np.float64)
