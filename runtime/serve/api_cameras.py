"""``/api/cameras``: every camera's state and settings, changing them at run time, and its
live view (the newest scored frame as a JPEG, an MJPEG stream, recent scores and their
histogram against the threshold).

Reads and changes go through the service's :class:`~adedge.runtime.serve.api_types.
ConsoleView`; a camera that does not exist is a 404 and a change the service refuses (an
alarm rule with k > n) a 409, each with one line saying why. The JPEGs come from one
:class:`~adedge.runtime.serve.live_view.LiveImages` per app, so each new frame is drawn and
encoded once however many clients watch it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from adedge.runtime.serve.api_types import (
    CameraInfo,
    CameraPatch,
    ConsoleView,
    LiveFrame,
    NotFound,
    ScoreHistory,
)
from adedge.runtime.serve.http_api import console_view
from adedge.runtime.serve.live_view import (
    DEFAULT_STREAM_FPS,
    MAX_STREAM_FPS,
    MJPEG_MEDIA_TYPE,
    LiveImages,
    Overlay,
    mjpeg_parts,
)

DEFAULT_SCORE_SECONDS = 120.0
DEFAULT_HISTOGRAM_SECONDS = 600.0
MAX_SECONDS = 7 * 24 * 3600.0
NO_STORE = {"Cache-Control": "no-store"}

router = APIRouter(prefix="/api/cameras", tags=["cameras"])
_images_lock = threading.Lock()


class StreamView(ConsoleView, Protocol):
    """The service as a stream reads it: also whether it is stopping."""

    def wait(self, timeout: float | None = None) -> bool:
        """True once the service was stopped (waits up to ``timeout``)."""
        ...


def live_images(request: Request) -> LiveImages:
    """The app's shared JPEG cache (one per app: per service, never across two)."""
    state = request.app.state
    with _images_lock:
        images = getattr(state, "live_images", None)
        if images is None:
            images = state.live_images = LiveImages()
    return images


class ScoreHistogram(BaseModel):
    """Recent scores in ``bins`` equal bins (``edges`` has bins + 1 values, covering the
    scores and the threshold): ``normal`` counts the frames scored outside events, ``alarm``
    those inside one."""

    camera: str
    threshold: float | None
    edges: list[float]
    normal: list[int]
    alarm: list[int]


@router.get("", response_model=list[CameraInfo])
def list_cameras(view: ConsoleView = Depends(console_view)) -> list[CameraInfo]:
    """Every camera in the config's order: state, rates, threshold and alarm rule."""
    return view.cameras_info()


@router.get("/{cam}", response_model=CameraInfo)
def get_camera(cam: str, view: ConsoleView = Depends(console_view)) -> CameraInfo:
    """One camera; 404 if there is none of that name."""
    return view.camera_info(cam)


@router.patch("/{cam}", response_model=CameraInfo)
def patch_camera(
    cam: str, patch: CameraPatch, view: ConsoleView = Depends(console_view)
) -> CameraInfo:
    """Switch detection, set the threshold or the alarm rule now; kept across restarts.
    409 when the result would not be valid (an alarm rule with k > n)."""
    return view.update_camera(cam, patch)


def _newest(view: ConsoleView, cam: str) -> LiveFrame:
    frame = view.live_frame(cam)
    if frame is None:
        raise NotFound(
            f"camera {cam} has scored no frame yet",
            f"wait for its first frame (GET /api/cameras/{cam} shows its state)",
        )
    return frame


@router.get(
    "/{cam}/latest.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "the newest frame"}},
)
def latest_jpeg(
    cam: str,
    overlay: Overlay = Overlay.HEATMAP,
    view: ConsoleView = Depends(console_view),
    images: LiveImages = Depends(live_images),
) -> Response:
    """The newest scored frame as a JPEG (heatmap overlay where the model gives maps, the
    score against the threshold, ALARM while an event is open); 404 before the first."""
    frame = _newest(view, cam)
    return Response(images.jpeg(cam, frame, overlay), media_type="image/jpeg", headers=NO_STORE)


def _stopped(view: StreamView) -> Callable[[], bool]:
    return lambda: view.wait(0)


@router.get(
    "/{cam}/stream.mjpeg",
    response_class=StreamingResponse,
    responses={200: {"content": {MJPEG_MEDIA_TYPE: {}}, "description": "a live MJPEG view"}},
)
def stream_mjpeg(
    cam: str,
    fps: float = Query(DEFAULT_STREAM_FPS, gt=0, description=f"at most {MAX_STREAM_FPS:g}"),
    overlay: Overlay = Overlay.HEATMAP,
    view: StreamView = Depends(console_view),
    images: LiveImages = Depends(live_images),
) -> StreamingResponse:
    """A live view for an ``<img>`` tag: a part each time a new frame was scored, at most
    ``fps`` a second (capped at 15), drawn as ``latest.jpg``. Ends when the client goes away
    or the service stops. The stream waits on the event loop, not in a worker thread."""
    view.live_frame(cam)  # 404 before the stream starts
    parts = mjpeg_parts(
        lambda: view.live_frame(cam),
        lambda frame: images.jpeg(cam, frame, overlay),
        fps,
        _stopped(view),
    )
    return StreamingResponse(parts, media_type=MJPEG_MEDIA_TYPE, headers=NO_STORE)


@router.get("/{cam}/scores", response_model=ScoreHistory)
def scores(
    cam: str,
    seconds: float = Query(DEFAULT_SCORE_SECONDS, gt=0, le=MAX_SECONDS),
    view: ConsoleView = Depends(console_view),
) -> ScoreHistory:
    """The camera's scores over the last ``seconds``, oldest first (the sparkline)."""
    return view.score_history(cam, since=time.time() - seconds)


@router.get("/{cam}/histogram", response_model=ScoreHistogram)
def histogram(
    cam: str,
    bins: int = Query(30, ge=1, le=200),
    seconds: float = Query(DEFAULT_HISTOGRAM_SECONDS, gt=0, le=MAX_SECONDS),
    view: ConsoleView = Depends(console_view),
) -> ScoreHistogram:
    """How the recent scores fall, outside events and inside, against the threshold (the
    camera page draws the threshold where it sits among the normal scores)."""
    return score_histogram(view.score_history(cam, since=time.time() - seconds), bins)


def score_histogram(history: ScoreHistory, bins: int) -> ScoreHistogram:
    """``history``'s finite scores counted in ``bins`` equal bins over the range of the
    scores and the threshold (a range of one value is widened so the bins have width)."""
    points = [p for p in history.points if math.isfinite(p.score)]
    values = [p.score for p in points]
    if history.threshold is not None and math.isfinite(history.threshold):
        values.append(history.threshold)
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low <= 1e-9 * max(1.0, abs(low), abs(high)):
        pad = 0.5 * abs(low) if low else 0.5
        low, high = low - pad, high + pad
    edges = np.linspace(low, high, bins + 1)
    normal = np.array([p.score for p in points if not p.alarm], np.float64)
    alarm = np.array([p.score for p in points if p.alarm], np.float64)
    return ScoreHistogram(
        camera=history.camera,
        threshold=history.threshold,
        edges=[float(edge) for edge in edges],
        normal=[int(n) for n in np.histogram(normal, edges)[0]],
        alarm=[int(n) for n in np.histogram(alarm, edges)[0]],
    )
