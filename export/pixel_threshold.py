"""The pixel threshold of a bundle whose stages output ``amap`` (card ``threshold.pixel``).

Calibrated, like the image threshold, on held-out normal frames scored by the runtime's own
Detector on the written bundle, so the heatmap is exactly the frame-size map of deployment
(stitched tiles, stage weights). ``value`` is a high percentile (default 99.9) of all their
pixel scores; ``min_area`` is the image threshold's quantile (e.g. 0.99) of each frame's
largest connected region above ``value``, so pixel decisions alone flag about as few
held-out normal frames as the image threshold does, and never less than a small share of
the frame (:data:`adedge.card.MIN_AREA_FLOOR`) so a few hot pixels never decide. No torch.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from adedge.card import DEFAULT_PIXEL_PERCENTILE, MAX_AREA, MIN_AREA_FLOOR, PixelThreshold
from adedge.errors import AdedgeError
from adedge.runtime.regions import largest_region

MAX_PIXELS = 1 << 24  # pixel scores kept for the percentile (64 MiB); more are subsampled


def check_percentile(percentile: float, name: str = "the pixel threshold's percentile") -> float:
    if not (math.isfinite(percentile) and 0 < percentile <= 100):
        raise AdedgeError(
            f"{name} must be above 0 and at most 100 (got {percentile})",
            f"e.g. {DEFAULT_PIXEL_PERCENTILE:g}",
        )
    return percentile


def calibrate_pixel_threshold(
    maps: list[np.ndarray],
    quantile: float,
    percentile: float = DEFAULT_PIXEL_PERCENTILE,
    what: str = "held-out normal frames",
) -> PixelThreshold | None:
    """The pixel threshold from the frame-size heatmaps of held-out normal frames (None:
    no map, or no finite pixel score). ``quantile``: the image threshold's (0.99)."""
    check_percentile(percentile)
    maps = [np.asarray(m, dtype=np.float32) for m in maps if m is not None and m.size]
    if not maps:
        return None
    total = sum(m.size for m in maps)
    step = max(1, math.ceil(total / MAX_PIXELS))
    pixels = np.concatenate([m.reshape(-1)[::step] for m in maps])
    pixels = pixels[np.isfinite(pixels)]
    if not pixels.size:
        return None
    value = float(np.percentile(pixels.astype(np.float64), percentile))
    frame = Counter(m.shape[:2] for m in maps).most_common(1)[0][0]
    reference = frame[0] * frame[1]
    # each frame's largest region, in pixels of the reference frame size
    largest = [largest_region(m, value) * reference / (m.shape[0] * m.shape[1]) for m in maps]
    floor = max(1, math.ceil(MIN_AREA_FLOOR * reference))
    measured = math.ceil(float(np.quantile(largest, quantile)))
    min_area = min(MAX_AREA, max(floor, measured))
    sampled = "" if step == 1 else f" (every {step}th)"
    detail = (
        f"{percentile:g}th percentile of {pixels.size} pixel scores{sampled} of {len(maps)} "
        f"{what}; min_area: {quantile:.0%} of them have no larger region above it "
        f"({measured} px), at least {MIN_AREA_FLOOR:.2%} of the frame ({floor} px)"
    )
    return PixelThreshold(value, percentile, int(min_area), (int(frame[0]), int(frame[1])), detail)
