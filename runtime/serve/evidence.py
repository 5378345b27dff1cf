"""An event's evidence: the peak frame as a snapshot (heatmap overlay, the hottest region
outlined, a text bar; with pixel decisions the regions above the pixel threshold outlined
on the unpainted frame instead), the raw frame, the heatmap as a 16-bit PNG, and a clip from a
per-camera pre-roll ring buffer to a post-roll after the event.

Masks (polygons in normalised 0..1 coordinates) make areas of the heatmap cold before the
hottest region is looked for. Whole files are written atomically (temporary name, then
renamed); a clip is written under a hidden temporary name and renamed into place when it
is finished, so a file under its final name always plays.

Everything here runs in a camera's thread: costs are bounded (a few milliseconds per
frame; the pre-roll of a new clip is encoded a frame at a time, see :class:`ClipRecorder`).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from adedge.atomic import atomic_path
from adedge.errors import AdedgeError
from adedge.runtime.regions import Region
from adedge.runtime.serve.config import EvidenceConfig
from adedge.runtime.serve.event_types import Box, MediaKind
from adedge.runtime.serve.evidence_clips import ClipRecorder, PreRoll, estimate_fps
from adedge.runtime.sinks.annotate import (
    DARK,
    GREEN,
    RED,
    WHITE,
    HeatmapScale,
    _colour_bar,
    outline_regions,
    overlay_heatmap,
)

__all__ = [  # the clip's parts live in evidence_clips and are importable from here
    "CameraMask",
    "ClipRecorder",
    "PreRoll",
    "apply_mask",
    "as_bgr",
    "PeakFrame",
    "draw_snapshot",
    "encode_jpeg",
    "estimate_fps",
    "heatmap_png",
    "hottest_box",
    "mask_array",
    "read_heatmap_png",
    "write_evidence",
]

Polygon = list[tuple[float, float]]

BOX_WORK_SIDE = 320  # hottest_box looks at the map shrunk to at most this many pixels a side
HOT_LEVEL = 0.5  # a pixel is hot above median + HOT_LEVEL * (max - median) of the map
HEATMAP_PNG_MIN, HEATMAP_PNG_MAX = "adedge.heatmap.min", "adedge.heatmap.max"  # tEXt keys


# --- masks -----------------------------------------------------------------------------


def mask_array(polygons: list[Polygon], frame_hw: tuple[int, int]) -> np.ndarray | None:
    """A bool (H, W) mask, True inside any polygon (normalised 0..1 points scaled to
    the frame: x * W, y * H); None where nothing is masked (no polygons, or only ones
    with no area or no finite points), so callers skip the work. Build it once per camera
    and frame size (:class:`CameraMask`)."""
    height, width = frame_hw
    mask = np.zeros((height, width), np.uint8)
    for polygon in polygons:
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if len(points) < 3 or not np.isfinite(points).all() or _area(points) <= 1e-12:
            continue
        pixels = points * (width, height)
        pixels = np.clip(np.rint(pixels), -width, 2 * width).astype(np.int32)
        cv2.fillPoly(mask, [pixels.reshape(-1, 1, 2)], 1)
    return mask.astype(bool) if mask.any() else None


def _area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))) / 2


class CameraMask:
    """A camera's polygons with their mask cached per frame size (a camera's size rarely
    changes, so this is one fillPoly per camera, not one per frame)."""

    def __init__(self, polygons: list[Polygon]) -> None:
        self.polygons = [list(polygon) for polygon in polygons]
        self._cache: dict[tuple[int, int], np.ndarray | None] = {}

    def for_size(self, frame_hw: tuple[int, int]) -> np.ndarray | None:
        if not self.polygons:
            return None
        key = (int(frame_hw[0]), int(frame_hw[1]))
        if key not in self._cache:
            if len(self._cache) > 8:  # a source whose size keeps changing: stay bounded
                self._cache.clear()
            self._cache[key] = mask_array(self.polygons, key)
        return self._cache[key]


def apply_mask(amap: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """A copy of ``amap`` whose masked area holds the lowest finite value outside the mask
    (so it is cold, and the map's range is not widened); ``amap`` itself where ``mask`` is
    None. A mask of another size is stretched to the map."""
    if mask is None:
        return amap
    if mask.shape != amap.shape:
        size = (amap.shape[1], amap.shape[0])
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    out = np.array(amap, dtype=np.float32, copy=True)
    outside = out[~mask]
    finite = outside[np.isfinite(outside)]
    out[mask] = float(finite.min()) if finite.size else 0.0
    return out


# --- the hottest region ----------------------------------------------------------------


def hottest_box(amap: np.ndarray, frame_hw: tuple[int, int]) -> Box | None:
    """The bounding box, in frame pixels, of the connected hot region holding the map's
    maximum. The map (shrunk to at most ``BOX_WORK_SIDE`` a side, slightly blurred) is hot
    above ``median + HOT_LEVEL * (max - median)``; where more than half the map sits at its
    maximum the median is replaced by the minimum. None for a flat map or one with no
    finite value. The map may have any size: the box is scaled to ``frame_hw``."""
    work = _working_map(amap)
    if work is None:
        return None
    high = float(work.max())
    base = float(np.median(work))
    if _same(high, base):
        base = float(work.min())
        if _same(high, base):
            return None
    level = base + HOT_LEVEL * (high - base)
    hot = (work >= level).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    peak = np.unravel_index(int(np.argmax(work)), work.shape)
    x, y, width, height, _ = stats[labels[peak]]
    scale_x = frame_hw[1] / work.shape[1]
    scale_y = frame_hw[0] / work.shape[0]
    left, top = math.floor(x * scale_x), math.floor(y * scale_y)
    right = min(frame_hw[1], math.ceil((x + width) * scale_x))
    bottom = min(frame_hw[0], math.ceil((y + height) * scale_y))
    return Box(int(left), int(top), int(right - left), int(bottom - top))


def _same(a: float, b: float) -> bool:
    return a - b <= 1e-6 * max(1.0, abs(a), abs(b))


def _working_map(amap: np.ndarray) -> np.ndarray | None:
    """``amap`` as finite float32 (NaN and -inf at its minimum, +inf at its maximum),
    shrunk to at most ``BOX_WORK_SIDE`` a side and blurred a little; None where it has no
    finite value."""
    amap = np.asarray(amap, dtype=np.float32)
    if amap.ndim != 2 or amap.size == 0:
        return None
    finite = np.isfinite(amap)
    if not finite.any():
        return None
    if not finite.all():
        low, high = float(amap[finite].min()), float(amap[finite].max())
        amap = np.nan_to_num(amap, nan=low, posinf=high, neginf=low)
    factor = BOX_WORK_SIDE / max(amap.shape)
    if factor < 1:
        size = (max(1, round(amap.shape[1] * factor)), max(1, round(amap.shape[0] * factor)))
        amap = cv2.resize(amap, size, interpolation=cv2.INTER_AREA)
    sigma = max(1.0, max(amap.shape) / 160)
    return cv2.GaussianBlur(amap, (0, 0), sigma)


# --- images ----------------------------------------------------------------------------


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """A contiguous BGR uint8 copy of a grey, BGR or BGRA frame."""
    if frame.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.uint8), cv2.COLOR_GRAY2BGR)
    return np.array(frame[:, :, :3], dtype=np.uint8, order="C", copy=True)


@dataclass(frozen=True)
class PeakFrame:
    """The frame an event's evidence shows: the image (BGR or grey), its heatmap (masked
    already; None without one), the hottest region, the score against the threshold, and
    which camera saw it when (Unix time)."""

    camera: str
    when: float
    frame: np.ndarray
    amap: np.ndarray | None
    box: Box | None
    score: float
    threshold: float
    regions: list[Region] | None = None  # pixel decisions: the regions to outline


def draw_snapshot(peak: PeakFrame, heat_range: tuple[float, float] | None = None) -> np.ndarray:
    """The peak frame (BGR, its own size) with the heatmap overlaid (coloured over
    ``heat_range``, else the map's own finite range) and its colour bar, the box outlined in
    red on a dark edge, and two text bars: camera and UTC time; score and threshold. With
    pixel decisions (``peak.regions`` a list) the frame is not painted: each region is
    outlined with its area instead (:func:`adedge.runtime.sinks.annotate.outline_regions`)."""
    frame, amap, box, score, threshold = (
        peak.frame,
        peak.amap,
        peak.box,
        peak.score,
        peak.threshold,
    )
    canvas = as_bgr(frame)
    height, width = canvas.shape[:2]
    value_range = None
    if peak.regions is not None:  # outlined on the frame as seen: no heatmap wash
        amap = box = None
    if amap is not None:
        if heat_range is None:
            value_range = HeatmapScale().update(np.asarray(amap, np.float32))
        else:
            value_range = (heat_range[0], max(heat_range[1], heat_range[0] + 1e-6))
        canvas = overlay_heatmap(canvas, amap, *value_range)
    if box is not None:
        thickness = max(2, min(height, width) // 150)
        corner = (box.x + box.width - 1, box.y + box.height - 1)
        cv2.rectangle(canvas, (box.x, box.y), corner, DARK, thickness + 2)
        cv2.rectangle(canvas, (box.x, box.y), corner, RED, thickness)
    stamp = datetime.fromtimestamp(peak.when, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    anomalous = math.isfinite(score) and score >= threshold
    margin = max(2, min(height, width) // 120)
    label = "ANOMALY" if anomalous else "normal"
    lines = (f"{peak.camera}  {stamp}", f"score {score:.4g} / thr {threshold:.4g} {label}")
    bottom = _text_bar(canvas, lines, RED if anomalous else GREEN, margin)
    if value_range is not None:
        _colour_bar(canvas, *value_range, top=bottom + 4, margin=margin)
    if peak.regions:
        outline_regions(canvas, peak.regions, top=bottom)
    return canvas


def _text_bar(
    canvas: np.ndarray, lines: tuple[str, ...], colour: tuple[int, int, int], margin: int
) -> int:
    """``lines`` on a dark bar across the top, one font scale fitting the widest line to
    the width, a ``colour`` stripe under them; returns the bar's bottom row."""
    width = canvas.shape[1]
    font = cv2.FONT_HERSHEY_SIMPLEX
    widest = max(cv2.getTextSize(line, font, 1.0, 1)[0][0] for line in lines)
    scale = min(1.0, (width - 2 * margin - 8) / max(widest, 1))
    (_, text_h), base = cv2.getTextSize("Ag", font, scale, 1)
    step = text_h + base + 4
    bottom = margin + 4 + step * len(lines) + 3
    cv2.rectangle(canvas, (margin, margin), (width - 1 - margin, bottom), DARK, -1)
    for number, line in enumerate(lines):
        origin = (margin + 4, margin + 4 + text_h + number * step)
        cv2.putText(canvas, line, origin, font, scale, WHITE, 1, cv2.LINE_AA)
    cv2.rectangle(canvas, (margin, bottom - 3), (width - 1 - margin, bottom), colour, -1)
    return bottom


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """``image`` (BGR or grey) as JPEG bytes at ``quality`` (10..100)."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise AdedgeError(f"OpenCV could not encode a {image.shape} image as JPEG")
    return data.tobytes()


def heatmap_png(amap: np.ndarray) -> bytes:
    """The map as a 16-bit grey PNG: 0 is its lowest finite value, 65535 its highest (NaN
    and -inf as the lowest, +inf as the highest; a flat map is all 0). The two values are
    recorded in the PNG's tEXt chunks ``adedge.heatmap.min``/``max`` (OpenCV writes none:
    they are added here), so :func:`read_heatmap_png` gives back the model's units."""
    amap = np.asarray(amap, dtype=np.float32)
    finite = np.isfinite(amap)
    low = float(amap[finite].min()) if finite.any() else 0.0
    high = float(amap[finite].max()) if finite.any() else 0.0
    values = np.nan_to_num(amap, nan=low, posinf=high, neginf=low)
    span = high - low
    unit = (values - low) / span if span > 0 else np.zeros_like(values)
    image = np.rint(np.clip(unit, 0.0, 1.0) * 65535).astype(np.uint16)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise AdedgeError(f"OpenCV could not encode a {image.shape} heatmap as PNG")
    return _with_text(data.tobytes(), {HEATMAP_PNG_MIN: repr(low), HEATMAP_PNG_MAX: repr(high)})


def _with_text(png: bytes, texts: dict[str, str]) -> bytes:
    """``png`` with a tEXt chunk per item inserted after its header chunk (IHDR)."""
    after_header = 8 + 4 + 4 + 13 + 4  # signature, IHDR length, type, data, CRC
    chunks = b""
    for key, value in texts.items():
        body = b"tEXt" + key.encode("latin-1") + b"\0" + value.encode("latin-1")
        chunks += struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return png[:after_header] + chunks + png[after_header:]


def read_heatmap_png(data: bytes) -> tuple[np.ndarray, float, float]:
    """A heatmap PNG of :func:`heatmap_png` back in the model's units: (map, min, max)."""
    texts: dict[str, str] = {}
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"tEXt":
            key, _, value = data[position + 8 : position + 8 + length].partition(b"\0")
            texts[key.decode("latin-1")] = value.decode("latin-1")
        position += 12 + length
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint16 or HEATMAP_PNG_MIN not in texts:
        raise AdedgeError("not a heatmap PNG written by adedge", "read it with cv2.imread")
    low, high = float(texts[HEATMAP_PNG_MIN]), float(texts[HEATMAP_PNG_MAX])
    return (low + image.astype(np.float32) / 65535 * (high - low)), low, high


def write_evidence(
    store_media_file: Callable[[MediaKind, str], Path],
    peak: PeakFrame,
    options: EvidenceConfig,
    heat_range: tuple[float, float] | None = None,
) -> dict[MediaKind, Path]:
    """Write the peak frame's snapshot (.jpg), raw frame (.jpg) and heatmap (.png, where
    there is a map) as ``options`` asks, each atomically at the path
    ``store_media_file(kind, suffix)`` gives; returns what was written. The map should be
    masked already (:func:`apply_mask`). OSError (disk full) reaches the caller."""
    frame, amap = peak.frame, peak.amap
    images: dict[MediaKind, tuple[str, Callable[[], bytes]]] = {}
    quality = options.jpeg_quality
    if options.snapshot:
        images[MediaKind.SNAPSHOT] = (
            ".jpg",
            lambda: encode_jpeg(draw_snapshot(peak, heat_range), quality),
        )
    if options.raw_frame:
        images[MediaKind.FRAME] = (".jpg", lambda: encode_jpeg(as_bgr(frame), quality))
    if options.heatmap and amap is not None:
        images[MediaKind.HEATMAP] = (".png", lambda: heatmap_png(amap))
    written = {}
    for kind, (suffix, encode) in images.items():
        data = encode()
        path = Path(store_media_file(kind, suffix))
        with atomic_path(path) as temporary:
            temporary.write_bytes(data)
        written[kind] = path
    return written
