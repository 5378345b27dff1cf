"""Frame sources: one spelling names any camera, stream, video, image folder or test scene.

``open_source(spec)`` understands (like jetson-inference's ``videoSource`` URIs):

* ``camera0`` / ``0`` / ``/dev/video0`` / ``v4l2:///dev/video0`` -- a USB/V4L2 camera (live)
* ``csi://0`` -- a Jetson CSI camera through GStreamer's ``nvarguscamerasrc`` (live)
* ``rtsp://...`` / ``rtmp://...`` / ``http(s)://...`` -- a network stream via FFmpeg (live)
* ``clip.mp4`` / ``file:///data/clip.mp4`` -- a video file: every frame, in order
* ``./images`` / ``'./images/*.png'`` / ``img.png`` -- image files, sorted by name
* ``synthetic`` / ``synthetic:seed=1,size=256,frames=100`` -- a generated textured surface
  with defects injected at known frames, so the whole pipeline runs with no camera and no data;
  ``synthetic:texture=brick|grass|gravel`` uses a real photographed texture (scikit-image)

Live sources run a capture thread that keeps only the newest frame: a slow model sees the
present, never a growing backlog, and every frame it misses is counted in ``dropped``. A
camera that stops delivering is reopened with exponential back-off. Files and folders give
every frame; a frame or image that cannot be decoded is skipped and counted in ``skipped``,
never fatal; a live source records every stretch without frames in ``gaps``. What a
stream should record as it happens (a skipped file, a live source dropping, each reopen
attempt, its return) is queued in ``events`` (:mod:`adedge.runtime.records`) in order.

Each frame carries two times: ``wall``, the Unix time it was read, and ``timestamp``, the
seconds on the source's own clock: the position in the video for files, ``index / fps``
for the synthetic scene (fps 25 unless capped), time since the source opened for image
folders, and for live sources the stream's own timestamps where the capture reports them,
else the time since the source opened. ``resize=(W, H)`` resizes every frame as it leaves
the source, so the detector and every sink see the same image.

A spelling is read once, by :func:`adedge.uri.parse_uri` (the parser ``--sink`` uses too).
The sources live in ``base`` (the contract), ``files``, ``live`` and ``synthetic``; the
names they export are importable from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from adedge.errors import SourceError
from adedge.runtime.frames import conform_image
from adedge.runtime.sources.base import (
    Frame,
    FrameSource,
    Gap,
    _check_options,
    check_resize,
    parse_resize,
)
from adedge.runtime.sources.files import (
    GLOB_CHARS,
    ImageFolderSource,
    VideoFileSource,
    _open_path,
)
from adedge.runtime.sources.live import (
    FFMPEG_OPTIONS_ENV,
    LOW_LATENCY_FFMPEG,
    NETWORK_SCHEMES,
    RTSP_TRANSPORTS,
    CsiOptions,
    LiveSource,
    _open_camera,
    _open_csi,
    _open_network,
    csi_pipeline,
    ffmpeg_capture_options,
    parse_csi,
    split_transport,
)
from adedge.runtime.sources.synthetic import (
    SYNTHETIC,
    SYNTHETIC_FPS,
    SceneOptions,
    SyntheticSource,
    fit_texture,
    load_real_texture,
    parse_synthetic,
    surface_texture,
)
from adedge.uri import Uri, parse_uri, redact_url

CAMERA = re.compile(r"(?:camera)?(\d*)")  # camera0, camera, 0: a USB camera's index
V4L2_DEVICE = re.compile(r"/dev/video\d+")


def open_source(
    spec: str,
    *,
    loop: bool = False,
    max_frames: int | None = None,
    every: int = 1,
    fps: float | None = None,
    resize: tuple[int, int] | None = None,
    truth: Mapping[int, bool] | None = None,
) -> FrameSource:
    """Open the source a user typed (see the module docstring for the spellings).

    ``every=N`` keeps every N-th frame; ``max_frames`` ends the source after that many
    frames; ``fps`` caps the rate of files, folders and the synthetic scene (live sources
    run at their own rate); ``loop`` restarts files and folders at their end; ``resize``
    (W, H) resizes every frame before anything else sees it; ``truth`` gives known labels
    by frame index (a ground-truth CSV) to frames that carry none of their own.
    Raises SourceError (one line: what and how to fix) where the source cannot be opened.
    """
    check_source_options(every, max_frames, fps, resize)
    options = {
        "every": every,
        "max_frames": max_frames,
        "fps": fps,
        "loop": loop,
        "resize": resize,
        "truth": truth,
    }
    uri = spec if isinstance(spec, Uri) else parse_uri(spec, named=(SYNTHETIC,))
    if not uri.text:
        raise SourceError(
            "the source is empty", "pass camera0, a video file, a folder or synthetic"
        )
    if uri.scheme == SYNTHETIC:
        return SyntheticSource(uri.text, parse_synthetic(uri), **options)
    if not uri.scheme:  # a path, or a camera's name
        camera = CAMERA.fullmatch(uri.text)
        if camera and (uri.text.startswith("camera") or camera.group(1)):
            return _open_camera(uri.text, int(camera.group(1) or 0), **options)
        if V4L2_DEVICE.fullmatch(uri.text):
            return _open_camera(uri.text, uri.text, **options)
        return _open_path(uri.text, **options)
    if uri.scheme == "v4l2":
        _refuse_options(uri)
        return _open_camera(uri.text, uri.location, **options)
    if uri.scheme == "csi":
        return _open_csi(uri, **options)
    if uri.scheme in NETWORK_SCHEMES:
        return _open_network(uri, **options)
    if uri.scheme == "file":
        return _open_path(uri.path, **options)
    raise SourceError(
        f"source scheme '{uri.scheme}://' in '{uri}' is not supported",
        "use camera0, /dev/video0, csi://0, rtsp://, http(s)://, file://, a path or synthetic",
    )


def check_source_options(
    every: int = 1,
    max_frames: int | None = None,
    fps: float | None = None,
    resize: tuple[int, int] | None = None,
) -> None:
    """The options every source takes, checked before any source (or model) is opened."""
    _check_options(every, max_frames, fps)
    if resize is not None:
        check_resize(resize)


def _refuse_options(uri: Uri) -> None:
    if uri.query:
        raise SourceError(
            f"source '{uri}' takes no options (?{uri.query})", "leave out what follows '?'"
        )


__all__ = [
    "FFMPEG_OPTIONS_ENV",
    "GLOB_CHARS",
    "LOW_LATENCY_FFMPEG",
    "NETWORK_SCHEMES",
    "RTSP_TRANSPORTS",
    "SYNTHETIC",
    "SYNTHETIC_FPS",
    "CsiOptions",
    "Frame",
    "FrameSource",
    "Gap",
    "ImageFolderSource",
    "LiveSource",
    "SceneOptions",
    "SyntheticSource",
    "VideoFileSource",
    "check_resize",
    "check_source_options",
    "conform_image",
    "csi_pipeline",
    "ffmpeg_capture_options",
    "fit_texture",
    "load_real_texture",
    "open_source",
    "parse_csi",
    "parse_resize",
    "parse_synthetic",
    "redact_url",
    "split_transport",
    "surface_texture",
]
