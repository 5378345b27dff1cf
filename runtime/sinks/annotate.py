"""Drawing a scored frame: a red (anomaly) or green border, a text bar with the score,
threshold and label, and where the model gives an anomaly map, what it found. Shared by the
video files and the display window.

With pixel decisions (a card with a pixel threshold: ``FrameScore.regions`` is a list) the
frame stays as the camera saw it and each region above the pixel threshold is outlined by a
thin yellow contour two pixels outside it, with its area in pixels: a defect stays visible
inside its outline (a thin scratch too), and a normal frame is not painted at all. Without
them (older cards, ``--no-pixel``) the heatmap is the only localisation there is, so it is
blended over the frame with its colour bar.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from adedge.runtime.detector import FrameScore
from adedge.runtime.regions import Region

RED, GREEN, WHITE, DARK = (0, 0, 255), (0, 200, 0), (255, 255, 255), (32, 32, 32)
YELLOW = (0, 255, 255)  # region outlines: apart from the red/green label colours
MIN_VIDEO_SIDE = 192  # smaller frames are enlarged so the annotation stays legible
HEATMAP_ALPHA = 0.45  # weight of the heatmap over the frame
HEATMAP_COLOURS = cv2.COLORMAP_JET


class HeatmapScale:
    """Maps anomaly-map values to colours with the lowest and highest value seen so far in
    the stream, so a colour means the same on every frame (a per-frame min-max would paint
    every normal frame as hot as the worst defect)."""

    def __init__(self) -> None:
        self.low = math.inf
        self.high = -math.inf

    def update(self, amap: np.ndarray) -> tuple[float, float]:
        """Widen the range with ``amap``'s finite values; returns (low, high), low < high."""
        finite = amap[np.isfinite(amap)]
        if finite.size:
            self.low = min(self.low, float(finite.min()))
            self.high = max(self.high, float(finite.max()))
        if not self.low <= self.high:
            return 0.0, 1.0
        return self.low, max(self.high, self.low + 1e-6)


def frame_amap(result: FrameScore) -> np.ndarray | None:
    """The result's anomaly map as a 2-D float32 array, or None where the model gives none.

    Read with getattr: only detectors of pixel-level models set ``FrameScore.amap``.
    """
    amap = result.amap
    if amap is None:
        return None
    amap = np.squeeze(np.asarray(amap, dtype=np.float32))
    return amap if amap.ndim == 2 and amap.size else None


def annotate(
    image: np.ndarray,
    index: int,
    result: FrameScore,
    threshold: float | None,
    heat: HeatmapScale | None = None,
) -> np.ndarray:
    """A BGR copy of the frame with a red (anomaly) or green border and a text bar; with an
    anomaly map, a heatmap overlay and a colour bar (scaled by ``heat``, else the map's own
    range)."""
    canvas = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    canvas = np.ascontiguousarray(canvas[:, :, :3], dtype=np.uint8)
    side = min(canvas.shape[:2])
    if side < MIN_VIDEO_SIDE:
        factor = math.ceil(MIN_VIDEO_SIDE / side)
        canvas = cv2.resize(canvas, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    else:
        canvas = canvas.copy()
        factor = 1
    amap = frame_amap(result)
    value_range = None
    regions = getattr(result, "regions", None)
    if regions is None and amap is not None:
        value_range = (heat or HeatmapScale()).update(amap)
        canvas = overlay_heatmap(canvas, amap, *value_range)
    height, width = canvas.shape[:2]
    colour = RED if result.anomalous else GREEN
    border = max(3, min(height, width) // 60)
    cv2.rectangle(canvas, (0, 0), (width - 1, height - 1), colour, 2 * border)
    label = "ANOMALY" if result.anomalous else "normal"
    if result.alarm:
        label += " ALARM"
    if regions:
        label += f" {len(regions)} region{'s' * (len(regions) > 1)}"
    thr = "" if threshold is None else f" / thr {threshold:.4g}"
    bar_bottom = _text_bar(
        canvas, f"#{index} score {result.score:.4g}{thr} {label}", colour, border
    )
    if value_range is not None:
        _colour_bar(canvas, *value_range, top=bar_bottom + 4, margin=border)
    if regions:  # over the text bar: a region at the top edge stays visible
        outline_regions(canvas, regions, factor, top=bar_bottom)
    return canvas


def outline_regions(
    canvas: np.ndarray, regions: list[Region], factor: int = 1, top: int = 0
) -> None:
    """Outline each region (:class:`adedge.runtime.regions.Region`, in frame pixels; the
    canvas is the frame enlarged ``factor`` times) with a thin yellow contour over a dark one
    (legible on bright and dark textures), and write its area in pixels above its box, or
    below it where that would reach into the text bar (rows above ``top``)."""
    height, width = canvas.shape[:2]
    thickness = max(1, min(height, width) // 400)
    scale = max(0.35, min(0.6, width / 1600))
    for region in regions:
        x, y, w, h = (v * factor for v in region.box)
        if region.contour is not None:
            points = [np.asarray(region.contour, np.int32) * factor + factor // 2]
            cv2.polylines(canvas, points, True, DARK, thickness + 2)
            cv2.polylines(canvas, points, True, YELLOW, thickness)
        else:
            cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), YELLOW, thickness)
        text = f"{region.area} px"
        (text_w, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        left = min(max(0, x), max(0, width - text_w - 2))
        above = y - 4 - text_h > top
        base = y - 4 if above else min(height - 2, y + h + text_h + 4)
        cv2.putText(canvas, text, (left, base), cv2.FONT_HERSHEY_SIMPLEX, scale, DARK, 3)
        cv2.putText(canvas, text, (left, base), cv2.FONT_HERSHEY_SIMPLEX, scale, YELLOW, 1)


def overlay_heatmap(canvas: np.ndarray, amap: np.ndarray, low: float, high: float) -> np.ndarray:
    """``canvas`` blended with ``amap`` (any size: it is stretched to the canvas) coloured
    from ``low`` (blue) to ``high`` (red)."""
    height, width = canvas.shape[:2]
    unit = (np.nan_to_num(amap, nan=low, posinf=high, neginf=low) - low) / (high - low)
    unit = cv2.resize(np.clip(unit, 0.0, 1.0), (width, height), interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap(np.rint(unit * 255).astype(np.uint8), HEATMAP_COLOURS)
    return cv2.addWeighted(canvas, 1.0 - HEATMAP_ALPHA, colours, HEATMAP_ALPHA, 0.0)


def _colour_bar(canvas: np.ndarray, low: float, high: float, top: int, margin: int) -> None:
    """A vertical colour scale at the right edge, ``high`` at the top, with its values."""
    height, width = canvas.shape[:2]
    bar_w = max(6, width // 40)
    right, bottom = width - 1 - margin - 4, height - 1 - margin - 4
    left, bar_h = right - bar_w, bottom - top
    if bar_h < 16 or left < width // 2:
        return
    ramp = np.linspace(255, 0, bar_h).astype(np.uint8)[:, None]
    strip = cv2.applyColorMap(np.repeat(ramp, bar_w, axis=1), HEATMAP_COLOURS)
    canvas[top:bottom, left:right] = strip
    cv2.rectangle(canvas, (left - 1, top - 1), (right, bottom), WHITE, 1)
    scale = max(0.3, min(0.5, width / 1200))
    for text, y in ((f"{high:.3g}", top + 10), (f"{low:.3g}", bottom - 2)):
        (text_w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        origin = (max(0, left - text_w - 4), y)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, DARK, 3)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, WHITE, 1)


def _text_bar(canvas: np.ndarray, text: str, colour: tuple[int, int, int], top: int) -> int:
    """Draw ``text`` on a dark bar below the top border, scaled to fit the width; returns
    the bar's bottom row."""
    width = canvas.shape[1]
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 1
    scale = 1.0
    (text_w, text_h), base = cv2.getTextSize(text, font, scale, thickness)
    scale = min(1.0, (width - 2 * top - 8) / max(text_w, 1))
    (text_w, text_h), base = cv2.getTextSize(text, font, scale, thickness)
    bar_bottom = top + text_h + base + 8
    cv2.rectangle(canvas, (top, top), (width - 1 - top, bar_bottom), DARK, -1)
    cv2.putText(canvas, text, (top + 4, top + 4 + text_h), font, scale, WHITE, thickness)
    cv2.rectangle(canvas, (top, bar_bottom - 3), (width - 1 - top, bar_bottom), colour, -1)
    return bar_bottom
