"""The ROC curve and the score histogram of `adedge eval`, drawn with OpenCV and numpy.

The runtime has no matplotlib (and must not need it on a Jetson), so these are small
hand-drawn charts: axes with ticks and labels, a legend, the operating points marked.
PNGs are written atomically at the highest zlib level (a few tens of kB).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from adedge.atomic import atomic_path
from adedge.runtime.operating_points import Curve, OperatingPoint

ROC_SIZE = (560, 520)  # width, height in pixels
HISTOGRAM_SIZE = (720, 440)
BINS = 40
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (200, 200, 200)
BLUE, RED, GREEN = (200, 110, 30), (40, 40, 210), (40, 150, 40)  # BGR
MARKERS = (RED, GREEN, (160, 60, 160), (0, 140, 220), (120, 120, 0), (90, 90, 90))


@dataclass(frozen=True)
class Frame:
    """Where the plot area lies on the canvas and what data range it shows."""

    left: int
    top: int
    right: int
    bottom: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    def x(self, value: float) -> int:
        low, high = self.x_range
        return int(round(self.left + (value - low) / (high - low) * (self.right - self.left)))

    def y(self, value: float) -> int:
        low, high = self.y_range
        return int(round(self.bottom - (value - low) / (high - low) * (self.bottom - self.top)))


def text(canvas: np.ndarray, words: str, at: tuple[int, int], scale: float = 0.45,
         colour: tuple[int, int, int] = BLACK, centre: bool = False) -> None:  # fmt: skip
    (width, height), _ = cv2.getTextSize(words, FONT, scale, 1)
    x, y = at
    if centre:
        x -= width // 2
    cv2.putText(canvas, words, (x, y + height // 2), FONT, scale, colour, 1, cv2.LINE_AA)


def vertical_text(canvas: np.ndarray, words: str, centre: tuple[int, int]) -> None:
    """``words`` rotated 90 degrees counter-clockwise, centred on ``centre``."""
    (width, height), base = cv2.getTextSize(words, FONT, 0.5, 1)
    strip = np.full((height + base + 4, width + 4, 3), 255, np.uint8)
    cv2.putText(strip, words, (2, height + 2), FONT, 0.5, BLACK, 1, cv2.LINE_AA)
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    rows, cols = strip.shape[:2]
    top, left = max(centre[1] - rows // 2, 0), max(centre[0] - cols // 2, 0)
    rows, cols = min(rows, canvas.shape[0] - top), min(cols, canvas.shape[1] - left)
    canvas[top : top + rows, left : left + cols] = strip[:rows, :cols]


def tick_label(value: float, step: float) -> str:
    decimals = max(0, int(-np.floor(np.log10(step))) if step > 0 else 0)
    if abs(value) < step * 1e-6:
        value = 0.0  # not "-0.00"
    return f"{value:.{min(decimals, 6)}f}"


def nice_ticks(low: float, high: float, count: int = 6) -> np.ndarray:
    """Round tick values (1, 2 or 5 times a power of ten) covering [low, high]."""
    span = high - low
    raw = span / max(count - 1, 1)
    power = 10.0 ** np.floor(np.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10) if m * power >= raw), default=raw)
    first = np.ceil(low / step - 1e-9) * step
    return np.arange(first, high + step * 1e-6, step)


def axes(canvas: np.ndarray, frame: Frame, title: str, x_label: str, y_label: str,
         x_ticks: np.ndarray, y_ticks: np.ndarray) -> None:  # fmt: skip
    """Grid, box, ticks with labels, axis labels and the title."""
    x_step = np.diff(x_ticks[:2]).sum() or 1.0
    for value in x_ticks:
        x = frame.x(value)
        cv2.line(canvas, (x, frame.top), (x, frame.bottom), GREY, 1)
        cv2.line(canvas, (x, frame.bottom), (x, frame.bottom + 5), BLACK, 1)
        text(canvas, tick_label(value, x_step), (x, frame.bottom + 16), centre=True)
    y_step = np.diff(y_ticks[:2]).sum() or 1.0
    for value in y_ticks:
        y = frame.y(value)
        cv2.line(canvas, (frame.left, y), (frame.right, y), GREY, 1)
        cv2.line(canvas, (frame.left - 5, y), (frame.left, y), BLACK, 1)
        label = tick_label(value, y_step)
        (width, _), _ = cv2.getTextSize(label, FONT, 0.45, 1)
        text(canvas, label, (frame.left - 9 - width, y))
    cv2.rectangle(canvas, (frame.left, frame.top), (frame.right, frame.bottom), BLACK, 1)
    text(canvas, x_label, ((frame.left + frame.right) // 2, frame.bottom + 40), 0.5, centre=True)
    vertical_text(canvas, y_label, (16, (frame.top + frame.bottom) // 2))
    while len(title) > 8 and cv2.getTextSize(title, FONT, 0.55, 1)[0][0] > canvas.shape[1] - 20:
        title = "..." + title[4:]  # a long data path loses its start, not its end
    text(canvas, title, (canvas.shape[1] // 2, 20), 0.55, centre=True)


def legend(canvas: np.ndarray, entries: list[tuple[str, tuple[int, int, int], str]],
           at: tuple[int, int], from_left: bool = False) -> None:  # fmt: skip
    """Entries (label, colour, 'line'|'box'|'dot') in a white box whose top-right (or, with
    ``from_left``, top-left) corner is ``at``."""
    widths = [cv2.getTextSize(label, FONT, 0.42, 1)[0][0] for label, _, _ in entries]
    width, height = max(widths, default=0) + 42, 20 * len(entries) + 8
    right, top = (at[0] + width, at[1]) if from_left else at
    left = right - width
    cv2.rectangle(canvas, (left, top), (right, top + height), WHITE, -1)
    cv2.rectangle(canvas, (left, top), (right, top + height), BLACK, 1)
    for i, (label, colour, kind) in enumerate(entries):
        y = top + 14 + 20 * i
        if kind == "box":
            cv2.rectangle(canvas, (left + 8, y - 5), (left + 28, y + 5), colour, -1)
        elif kind == "dot":
            cv2.circle(canvas, (left + 18, y), 5, colour, -1, cv2.LINE_AA)
        else:
            cv2.line(canvas, (left + 8, y), (left + 28, y), colour, 2, cv2.LINE_AA)
        text(canvas, label, (left + 34, y), 0.42)


def dashed(canvas: np.ndarray, start: tuple[int, int], end: tuple[int, int],
           colour: tuple[int, int, int], dash: int = 6) -> None:  # fmt: skip
    length = float(np.hypot(end[0] - start[0], end[1] - start[1]))
    pieces = max(int(length // dash), 1)
    for i in range(0, pieces, 2):
        a, b = i / pieces, min((i + 1) / pieces, 1.0)
        p = (int(start[0] + a * (end[0] - start[0])), int(start[1] + a * (end[1] - start[1])))
        q = (int(start[0] + b * (end[0] - start[0])), int(start[1] + b * (end[1] - start[1])))
        cv2.line(canvas, p, q, colour, 1, cv2.LINE_AA)


def roc_image(roc: Curve, auroc: float, points: list[OperatingPoint], title: str) -> np.ndarray:
    """The ROC curve (a step curve through every decision), chance diagonal, marked points."""
    width, height = ROC_SIZE
    canvas = np.full((height, width, 3), 255, np.uint8)
    frame = Frame(70, 40, width - 20, height - 60, (0.0, 1.0), (0.0, 1.0))
    ticks = np.linspace(0.0, 1.0, 6)
    axes(canvas, frame, title, "false-positive rate (FPR)", "true-positive rate (TPR)",
         ticks, ticks)  # fmt: skip
    dashed(canvas, (frame.x(0), frame.y(0)), (frame.x(1), frame.y(1)), (120, 120, 120))
    curve_points = np.array(
        [(frame.x(f), frame.y(t)) for f, t in zip(roc.fpr, roc.tpr, strict=True)], np.int32
    )
    cv2.polylines(canvas, [curve_points], False, BLUE, 2, cv2.LINE_AA)
    entries = [(f"ROC (AUROC {auroc:.3f})", BLUE, "line"), ("chance", (120, 120, 120), "line")]
    for point, colour in zip(points, MARKERS, strict=False):
        cv2.circle(canvas, (frame.x(point.fpr), frame.y(point.tpr)), 6, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, (frame.x(point.fpr), frame.y(point.tpr)), 6, BLACK, 1, cv2.LINE_AA)
        entries.append((f"{point.name}: {point.threshold:.4g}", colour, "dot"))
    legend(canvas, entries, (frame.right - 6, frame.bottom - 26 - 20 * len(entries)))
    return canvas


def histogram_image(labels: np.ndarray, scores: np.ndarray, threshold: float,
                    threshold_name: str, title: str) -> np.ndarray:  # fmt: skip
    """Normal and anomalous scores on shared bins, the threshold as a vertical line."""
    width, height = HISTOGRAM_SIZE
    canvas = np.full((height, width, 3), 255, np.uint8)
    flags = np.asarray(labels).astype(bool)
    values = np.asarray(scores, dtype=np.float64)
    low, high = float(min(values.min(), threshold)), float(max(values.max(), threshold))
    if high - low <= 0:
        low, high = low - 0.5, high + 0.5
    margin = (high - low) * 0.03
    low, high = low - margin, high + margin
    edges = np.linspace(low, high, BINS + 1)
    normal, _ = np.histogram(values[~flags], edges)
    anomalous, _ = np.histogram(values[flags], edges)
    top = max(int(normal.max(initial=0)), int(anomalous.max(initial=0)), 1)
    y_ticks = nice_ticks(0.0, max(top * 1.1, 5.0), 6)  # whole counts: steps of 1 or more
    y_top = max(float(y_ticks[-1]), top * 1.1)
    frame = Frame(70, 40, width - 20, height - 60, (low, high), (0.0, y_top))
    axes(canvas, frame, title, "score", "images", nice_ticks(low, high, 7), y_ticks)
    for counts, colour in ((normal, BLUE), (anomalous, RED)):
        layer = canvas.copy()
        for i, count in enumerate(counts):
            if count:
                box = (
                    (frame.x(edges[i]) + 1, frame.y(count)),
                    (frame.x(edges[i + 1]) - 1, frame.y(0)),
                )
                cv2.rectangle(layer, *box, colour, -1)
        cv2.addWeighted(layer, 0.55, canvas, 0.45, 0, dst=canvas)
    x = frame.x(threshold)
    cv2.line(canvas, (x, frame.top), (x, frame.bottom), GREEN, 2, cv2.LINE_AA)
    entries = [
        (f"normal ({int((~flags).sum())})", BLUE, "box"),
        (f"anomalous ({int(flags.sum())})", RED, "box"),
        (f"{threshold_name} threshold {threshold:.4g}", GREEN, "line"),
    ]
    if x > (frame.left + frame.right) / 2:  # keep the legend off the threshold line
        legend(canvas, entries, (frame.left + 6, frame.top + 6), from_left=True)
    else:
        legend(canvas, entries, (frame.right - 6, frame.top + 6))
    return canvas


def write_png(path: Path, image: np.ndarray) -> Path:
    """``image`` as a PNG at ``path``, written atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise OSError(f"OpenCV could not write {path}")
    return path
