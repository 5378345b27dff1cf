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

The sources live in ``base`` (the contract), ``files``, ``live`` and ``synthetic``; the
names they export are importable from here.
"""

from __future__ import annotations

import re

from adedge.errors import SourceError
from adedge.runtime.frames import conform_image, resize_frame
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
    file_uri_path,
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
    redact_url,
    split_transport,
)
from adedge.runtime.sources.synthetic import (
    SYNTHETIC_FPS,
    SceneOptions,
    SyntheticSource,
    fit_texture,
    load_real_texture,
    parse_synthetic,
    surface_texture,
)


def open_source(
    spec: str,
    *,
    loop: bool = False,
    max_frames: int | None = None,
    every: int = 1,
    fps: float | None = None,
    resize: tuple[int, int] | None = None,
) -> FrameSource:
    """Open the source a user typed (see the module docstring for the spellings).

    ``every=N`` keeps every N-th frame; ``max_frames`` ends the source after that many
    frames; ``fps`` caps the rate of files, folders and the synthetic scene (live sources
    run at their own rate); ``loop`` restarts files and folders at their end; ``resize``
    (W, H) resizes every frame before anything else sees it.
    Raises SourceError (one line: what and how to fix) where the source cannot be opened.
    """
    _check_options(every, max_frames, fps)
    if resize is not None:
        check_resize(resize)
    options = {
        "every": every,
        "max_frames": max_frames,
        "fps": fps,
        "loop": loop,
        "resize": resize,
    }
    text = str(spec).strip()
    if not text:
        raise SourceError(
            "the source is empty", "pass camera0, a video file, a folder or synthetic"
        )
    if text == "synthetic" or text.startswith("synthetic:"):
        return SyntheticSource(text, parse_synthetic(text), **options)
    camera = re.fullmatch(r"(?:camera)?(\d*)", text)
    if camera and (text.startswith("camera") or camera.group(1)):
        return _open_camera(text, int(camera.group(1) or 0), **options)
    if text.startswith("v4l2://"):
        return _open_camera(text, text[len("v4l2://") :], **options)
    if re.fullmatch(r"/dev/video\d+", text):
        return _open_camera(text, text, **options)
    if text.startswith("csi://"):
        return _open_csi(text, **options)
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme in NETWORK_SCHEMES:
        return _open_network(text, **options)
    if scheme == "file":
        text = file_uri_path(text)
    elif scheme:
        raise SourceError(
            f"source scheme '{scheme}://' in '{text}' is not supported",
            "use camera0, /dev/video0, csi://0, rtsp://, http(s)://, file://, a path or synthetic",
        )
    return _open_path(text, **options)


__all__ = [
    "FFMPEG_OPTIONS_ENV",
    "GLOB_CHARS",
    "LOW_LATENCY_FFMPEG",
    "NETWORK_SCHEMES",
    "RTSP_TRANSPORTS",
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
    "conform_image",
    "csi_pipeline",
    "ffmpeg_capture_options",
    "file_uri_path",
    "fit_texture",
    "load_real_texture",
    "open_source",
    "parse_csi",
    "parse_resize",
    "parse_synthetic",
    "redact_url",
    "resize_frame",
    "split_transport",
    "surface_texture",
]
