"""``adedge_camera_score_distribution``: a Prometheus histogram of each camera's scores
whose bucket edges sit around that camera's threshold (see ``metrics.py`` for why).
prometheus-client has no class for per-series edges, hence this collector.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

CAMERA_LABELS = ("camera", "model")
SCORE_BUCKET_OFFSETS = (-0.9, -0.75, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
"""Score edges are ``threshold + offset * |threshold|`` (``|threshold|`` taken as 1 when the
threshold is 0): for a threshold of 1 the edges are 0.1, 0.25, ..., 0.9, 1, 1.1, ..., 5."""


def score_bucket_edges(threshold: float) -> tuple[float, ...]:
    """The ``le`` edges of a camera's score histogram, rounded to 6 significant digits so
    the label reads ``0.37`` rather than ``0.37000000000000005``."""
    scale = abs(threshold) or 1.0
    return tuple(float(f"{threshold + offset * scale:.6g}") for offset in SCORE_BUCKET_OFFSETS)


@dataclass
class ScoreHistogram:
    """One camera's score histogram: cumulative only when collected, so observing is a
    bisect and an increment under the lock."""

    edges: tuple[float, ...] = ()
    counts: list[int] = field(default_factory=lambda: [0])  # one per edge, then +Inf
    total: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self, edges: tuple[float, ...]) -> None:
        with self.lock:
            self.edges = edges
            self.counts = [0] * (len(edges) + 1)
            self.total = 0.0

    def observe(self, value: float) -> None:
        with self.lock:
            self.counts[bisect_left(self.edges, value)] += 1
            self.total += value

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        with self.lock:
            edges, counts, total = self.edges, list(self.counts), self.total
        buckets, running = [], 0
        for edge, count in zip((*edges, math.inf), counts, strict=True):
            running += count
            buckets.append(("+Inf" if edge == math.inf else repr(edge), float(running)))
        return buckets, total


class ScoreHistograms(Collector):
    """``adedge_camera_score_distribution``: a histogram per camera with its own edges."""

    NAME = "adedge_camera_score_distribution"
    HELP = "Scores (model units), bucketed around the camera's threshold (le=threshold: normal)."

    def __init__(self) -> None:
        self._cameras: dict[tuple[str, str], ScoreHistogram] = {}
        self._lock = threading.Lock()

    def add(self, camera: str, model: str) -> ScoreHistogram:
        histogram = ScoreHistogram()
        with self._lock:
            self._cameras[(camera, model)] = histogram
        return histogram

    def remove(self, camera: str, model: str) -> None:
        with self._lock:
            self._cameras.pop((camera, model), None)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.NAME, self.HELP, labels=CAMERA_LABELS)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.NAME, self.HELP, labels=CAMERA_LABELS)
        with self._lock:
            cameras = list(self._cameras.items())
        for labels, histogram in cameras:
            buckets, total = histogram.snapshot()
            family.add_metric(list(labels), buckets, total)
        yield family
