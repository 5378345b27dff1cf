"""Pixel-level decisions: the connected regions of a heatmap above the card's pixel threshold.

The image score (max or mean over tiles) waters thin defects down: a scratch can glow on the
heatmap while the frame's score stays under the threshold. So where the card has a pixel
threshold (``threshold.pixel``, calibrated at export on held-out normal frames), each frame's
heatmap is cut at it and a frame is also anomalous when one connected region (8-connected)
is larger than the minimum area. Regions carry their area (pixels) and box (x, y, w, h) in
the coordinates of the frame as scored, and their outline for drawing. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from adedge.card import PixelThreshold
from adedge.errors import AdedgeError

MAX_REGIONS = 16  # the largest regions a frame reports (records and drawings stay bounded)
OUTLINE_GAP = 2  # pixels between a region and its outline: a thin scratch stays visible


@dataclass(frozen=True)
class Region:
    """One connected region above the pixel threshold: ``area`` in pixels, ``box`` as
    (x, y, width, height) in frame pixels; ``contour`` an outline ``OUTLINE_GAP`` pixels
    outside it ((N, 1, 2) int32 points in frame coordinates, so drawing it never covers the
    defect), for drawing only, never recorded."""

    area: int
    box: tuple[int, int, int, int]
    contour: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, object]:
        return {"area": self.area, "box": list(self.box)}


@dataclass(frozen=True)
class PixelRule:
    """The pixel decision a detector applies: the card's threshold ``value``, and either the
    card's ``min_area`` scaled to each frame's size or a fixed ``min_area_px`` override
    (pixels of the frame as scored, e.g. ``--min-area``)."""

    threshold: PixelThreshold
    min_area_px: float | None = None

    @property
    def value(self) -> float:
        return self.threshold.value

    def min_area_for(self, frame_hw: tuple[int, int]) -> float:
        if self.min_area_px is not None:
            return self.min_area_px
        return self.threshold.min_area_for(frame_hw)

    def regions(self, amap: np.ndarray) -> list[Region]:
        """The regions of ``amap`` that make its frame anomalous (largest first)."""
        return find_regions(amap, self.value, self.min_area_for(amap.shape[:2]))

    def describe(self) -> str:
        how = (
            f"{self.min_area_px:g} px (override)"
            if self.min_area_px is not None
            else f"{self.threshold.min_area} px of a {self.threshold.frame[1]}x"
            f"{self.threshold.frame[0]} frame"
        )
        return f"pixel threshold {self.value:.4g}, regions larger than {how}"


def pixel_rule(
    threshold: PixelThreshold | None, min_area: float | None = None, enabled: bool = True
) -> PixelRule | None:
    """The rule for a card's pixel threshold (None: no pixel decisions: turned off, or a
    card without one). A ``min_area`` override needs a card with a pixel threshold."""
    if min_area is not None:
        if isinstance(min_area, bool) or not (math.isfinite(min_area) and min_area >= 0):
            raise AdedgeError(
                f"--min-area must be a number of pixels, 0 or more (got {min_area!r})",
                "e.g. --min-area 50, or leave it out to use the card's",
            )
        if threshold is None and enabled:
            raise AdedgeError(
                "--min-area needs a model whose card has a pixel threshold (threshold.pixel)",
                "re-export the bundle with this adedge (models with an 'amap' heatmap get one)",
            )
    if not enabled or threshold is None:
        return None
    return PixelRule(threshold, None if min_area is None else float(min_area))


def _components(amap: np.ndarray, value: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels and stats (cv2.connectedComponentsWithStats, 8-connected) of ``amap > value``;
    NaN pixels are below any threshold."""
    mask = np.greater(np.asarray(amap, dtype=np.float32), value).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return labels, stats


def find_regions(
    amap: np.ndarray, value: float, min_area: float, limit: int = MAX_REGIONS
) -> list[Region]:
    """The connected regions of ``amap > value`` larger than ``min_area`` pixels, largest
    first (at most ``limit``), with boxes and outlines in ``amap``'s pixel coordinates."""
    labels, stats = _components(amap, value)
    areas = stats[1:, cv2.CC_STAT_AREA]
    kept = np.flatnonzero(areas > min_area) + 1
    kept = kept[np.argsort(-stats[kept, cv2.CC_STAT_AREA], kind="stable")][:limit]
    regions = []
    for label in kept:
        x, y, w, h, area = (int(v) for v in stats[label, :5])
        regions.append(Region(area, (x, y, w, h), _outline(labels, label, (x, y, w, h))))
    return regions


def _outline(labels: np.ndarray, label: int, box: tuple[int, int, int, int]) -> np.ndarray | None:
    """The outer contour of region ``label`` grown by OUTLINE_GAP pixels, in frame pixels."""
    x, y, w, h = box
    gap = OUTLINE_GAP
    crop = np.zeros((h + 2 * gap + 2, w + 2 * gap + 2), np.uint8)
    crop[gap + 1 : gap + 1 + h, gap + 1 : gap + 1 + w] = labels[y : y + h, x : x + w] == label
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))
    grown = cv2.dilate(crop, kernel)
    contours, _ = cv2.findContours(
        grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x - gap - 1, y - gap - 1)
    )
    return max(contours, key=cv2.contourArea) if contours else None


def largest_region(amap: np.ndarray, value: float) -> int:
    """The area in pixels of the largest connected region of ``amap > value`` (0: none)."""
    _, stats = _components(amap, value)
    return int(stats[1:, cv2.CC_STAT_AREA].max()) if len(stats) > 1 else 0
