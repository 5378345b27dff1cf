"""The live view of a camera: its newest scored frame drawn as the console shows it (the
heatmap overlay and the hottest region of an anomalous frame, or, where the model makes
pixel decisions, the outlined regions above its pixel threshold on the unpainted frame; a
text bar with the camera, the time, the score against the threshold, and ALARM while an
event is open), encoded as a JPEG small enough for a phone, and the MJPEG stream of those
JPEGs.

The drawing is the event snapshot's (:func:`~adedge.runtime.serve.evidence.draw_snapshot`)
so a live frame and an event's snapshot look alike, with the heatmap coloured over the
range the live view has seen so far for that camera (a per-frame range would paint every
normal frame as hot as the worst defect). A frame wider than :data:`LIVE_MAX_WIDTH` is
shrunk before drawing, which also makes the drawing and the encoding cheaper.

Every client of a camera gets the same bytes: :class:`LiveImages` encodes a frame once per
(camera, frame, overlay) and hands the JPEG to every request and stream that asks for it,
so a second viewer costs the network, not another encode.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from enum import Enum

import anyio
import cv2
import numpy as np

from adedge.runtime.regions import Region
from adedge.runtime.serve.api_types import LiveFrame
from adedge.runtime.serve.evidence import PeakFrame, draw_snapshot, encode_jpeg, hottest_box
from adedge.runtime.sinks.annotate import DARK, RED, WHITE, HeatmapScale

LIVE_JPEG_QUALITY = 80  # a live frame is looked at for a fifth of a second
LIVE_MAX_WIDTH = 960  # wider frames are shrunk: enough for a laptop, light for a phone
LIVE_MIN_WIDTH = 320  # narrower frames are enlarged (whole pixels) so the text bar is legible
DEFAULT_STREAM_FPS = 5.0
MAX_STREAM_FPS = 15.0  # whatever a client asks, a stream sends no more parts a second
STOP_POLL_S = 0.5  # a stream waiting for its next part checks this often whether to end
POLL_S = 0.02  # a stream whose part is due looks for a new frame this often
MJPEG_BOUNDARY = "frame"
MJPEG_MEDIA_TYPE = f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}"


class Overlay(str, Enum):
    """What is drawn over the live frame: the model's heatmap (where it gives one), or only
    the text bar."""

    HEATMAP = "heatmap"
    NONE = "none"


def live_size(frame_hw: tuple[int, int], max_width: int = LIVE_MAX_WIDTH) -> tuple[int, int]:
    """The (height, width) of the live image of a frame of ``frame_hw``: shrunk (aspect
    kept) to at most ``max_width`` wide, or enlarged a whole number of times to at least
    :data:`LIVE_MIN_WIDTH` wide (without passing ``max_width``)."""
    height, width = frame_hw
    if width > max_width:
        return max(1, round(height * max_width / width)), max_width
    factor = max(1, min(math.ceil(LIVE_MIN_WIDTH / max(width, 1)), max_width // max(width, 1)))
    return height * factor, width * factor


def fit_width(image: np.ndarray, max_width: int = LIVE_MAX_WIDTH) -> np.ndarray:
    """``image`` at its :func:`live_size` (area-averaged when shrunk, each pixel a block
    when enlarged); ``image`` itself when it fits."""
    size = live_size(image.shape[:2], max_width)
    if size == image.shape[:2]:
        return image
    shrink = size[1] < image.shape[1]
    method = cv2.INTER_AREA if shrink else cv2.INTER_NEAREST
    return cv2.resize(image, (size[1], size[0]), interpolation=method)


def draw_live(
    camera: str,
    frame: LiveFrame,
    overlay: Overlay = Overlay.HEATMAP,
    heat_range: tuple[float, float] | None = None,
    max_width: int = LIVE_MAX_WIDTH,
) -> np.ndarray:
    """``frame`` as the console shows it (a new BGR image, at most ``max_width`` wide): the
    snapshot's drawing (heatmap over ``heat_range``, the hottest region outlined when the
    score is over the threshold, camera, time, score and threshold; with pixel decisions
    the regions outlined instead of the heatmap), and, while an event is open, a red border
    and an ALARM tag at the bottom."""
    image = fit_width(frame.image, max_width)
    amap = frame.amap if overlay is Overlay.HEATMAP else None
    anomalous = math.isfinite(frame.score) and frame.score >= frame.threshold
    box = hottest_box(amap, image.shape[:2]) if amap is not None and anomalous else None
    regions = None
    if overlay is Overlay.HEATMAP and frame.regions is not None:
        regions = scaled_regions(frame.regions, frame.image.shape[:2], image.shape[:2])
    peak = PeakFrame(camera, frame.wall, image, amap, box, frame.score, frame.threshold, regions)
    canvas = draw_snapshot(peak, heat_range)
    if frame.alarm:
        _alarm_tag(canvas)
    return canvas


def scaled_regions(
    regions: list[Region], frame_hw: tuple[int, int], image_hw: tuple[int, int]
) -> list[Region]:
    """``regions`` (frame pixels) placed on the live image of ``image_hw``; each keeps its
    area in frame pixels, the number the events and the JSONL report."""
    if frame_hw == image_hw:
        return regions
    sy, sx = image_hw[0] / frame_hw[0], image_hw[1] / frame_hw[1]
    placed = []
    for region in regions:
        x, y, w, h = region.box
        box = (int(x * sx), int(y * sy), max(1, round(w * sx)), max(1, round(h * sy)))
        contour = None
        if region.contour is not None:
            points = np.asarray(region.contour, np.float64) * (sx, sy)
            contour = np.rint(points).astype(np.int32)
        placed.append(Region(region.area, box, contour))
    return placed


def _alarm_tag(canvas: np.ndarray) -> None:
    """A red border round the frame and ``ALARM`` on red at the bottom left."""
    height, width = canvas.shape[:2]
    border = max(2, min(height, width) // 100)
    cv2.rectangle(canvas, (0, 0), (width - 1, height - 1), RED, 2 * border)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.35, min(1.0, width / 800))
    (text_w, text_h), base = cv2.getTextSize("ALARM", font, scale, 2)
    left, bottom = 2 * border, height - 1 - 2 * border
    top = max(0, bottom - text_h - base - 6)
    cv2.rectangle(canvas, (left, top), (left + text_w + 8, bottom), RED, -1)
    cv2.rectangle(canvas, (left, top), (left + text_w + 8, bottom), DARK, 1)
    cv2.putText(canvas, "ALARM", (left + 4, bottom - base - 2), font, scale, WHITE, 2, cv2.LINE_AA)


class LiveImages:
    """The JPEGs of the cameras' newest frames, shared by every client of one service.

    Each (camera, overlay) keeps the JPEG of the newest frame asked for: a request for the
    same frame gets those bytes; two clients asking at once for a new frame encode it once
    (the second waits for the first). The heatmap's colour range grows per camera with the
    maps drawn, as the event snapshots' does. Thread-safe."""

    def __init__(self, quality: int = LIVE_JPEG_QUALITY, max_width: int = LIVE_MAX_WIDTH) -> None:
        self.quality = quality
        self.max_width = max_width
        self.encoded = 0  # frames encoded (a cache hit does not count)
        self.encode_cpu_s = 0.0  # CPU time of the drawing and encoding (this thread's only)
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, Overlay], _Slot] = {}
        self._heat: dict[str, HeatmapScale] = {}

    def jpeg(self, camera: str, frame: LiveFrame, overlay: Overlay = Overlay.HEATMAP) -> bytes:
        """``frame`` of ``camera`` drawn (:func:`draw_live`) and encoded, once per frame."""
        with self._lock:
            slot = self._slots.setdefault((camera, overlay), _Slot())
        with slot.lock:
            if slot.seq == frame.seq and slot.data is not None:
                return slot.data
            data = self._encode(camera, frame, overlay)
            if frame.seq >= slot.seq:  # a slow client's older frame does not evict a newer one
                slot.seq, slot.data = frame.seq, data
            return data

    def _encode(self, camera: str, frame: LiveFrame, overlay: Overlay) -> bytes:
        began = time.thread_time()
        heat_range = None
        if overlay is Overlay.HEATMAP and frame.amap is not None:
            with self._lock:
                scale = self._heat.setdefault(camera, HeatmapScale())
                heat_range = scale.update(np.asarray(frame.amap, np.float32))
        canvas = draw_live(camera, frame, overlay, heat_range, self.max_width)
        data = encode_jpeg(canvas, self.quality)
        with self._lock:
            self.encoded += 1
            self.encode_cpu_s += time.thread_time() - began
        return data


class _Slot:
    __slots__ = ("data", "lock", "seq")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seq = -1
        self.data: bytes | None = None


def stream_fps(asked: float | None) -> float:
    """The parts a second a stream sends: what was asked (default 5), at most 15."""
    if asked is None or not math.isfinite(asked) or asked <= 0:
        return DEFAULT_STREAM_FPS
    return min(float(asked), MAX_STREAM_FPS)


def mjpeg_part(jpeg: bytes, seq: int | None = None) -> bytes:
    """One part of a ``multipart/x-mixed-replace`` stream holding ``jpeg``; ``seq`` (the
    frame's number among the camera's scored frames) goes in an ``X-Frame-Seq`` header, which
    browsers ignore and a client can use to tell frames apart."""
    seq_header = "" if seq is None else f"X-Frame-Seq: {seq}\r\n"
    head = (
        f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(jpeg)}\r\n{seq_header}\r\n"
    ).encode("ascii")
    return head + jpeg + b"\r\n"


async def mjpeg_parts(
    latest: Callable[[], LiveFrame | None],
    encode: Callable[[LiveFrame], bytes],
    fps: float,
    stopped: Callable[[], bool],
) -> AsyncIterator[bytes]:
    """The parts of an MJPEG stream: one per newly scored frame (``latest()``, a cheap read
    of the camera's newest frame, is looked at every :data:`POLL_S` once a part is due), at
    most ``fps`` a second (frames scored in between are skipped: the client sees the
    newest). The first part is the newest frame at once. Ends once ``stopped()`` (checked
    at every look); the server closes the generator when the client goes away.

    It runs on the server's event loop and takes a worker thread only to draw and encode
    (``encode``), so many open streams do not use up the thread pool the plain endpoints
    run in."""
    gap = 1.0 / stream_fps(fps)
    seq = 0
    due = time.monotonic()
    while not stopped():
        wait = due - time.monotonic()
        if wait > 0:
            await anyio.sleep(min(wait, STOP_POLL_S))
            continue
        frame = latest()
        if frame is None or frame.seq <= seq:
            await anyio.sleep(POLL_S)
            continue
        seq = frame.seq
        due = time.monotonic() + gap
        jpeg = await anyio.to_thread.run_sync(encode, frame)
        yield mjpeg_part(jpeg, frame.seq)
