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
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import cv2
import numpy as np

from adedge.bundle import MAX_SIDE
from adedge.data import IMAGE_SUFFIXES, expand_image_glob, read_image
from adedge.defects import DEFECT_KINDS, REAL_TEXTURES, add_defect, read_texture
from adedge.errors import AdedgeError, SourceError
from adedge.runtime.records import FrameSkipped, GapEnded, GapStarted, Reconnect, StreamEvent

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")
GLOB_CHARS = ("*", "?", "[")
FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# No input buffering, low-delay decoding: a detector wants the present frame, not a smooth
# replay. RTSP runs over TCP unless the URL says ``?transport=udp`` (no lost UDP packets
# smearing frames). A user's own OPENCV_FFMPEG_CAPTURE_OPTIONS wins over both.
LOW_LATENCY_FFMPEG = "fflags;nobuffer|flags;low_delay"
RTSP_TRANSPORTS = ("tcp", "udp")
VIDEO_EOF_RETRIES = 25  # consecutive failed grabs that mean end of file, not a corrupt frame


@dataclass
class Frame:
    """One frame as the stream sees it; ``image`` is BGR uint8 (H, W, 3) or grey (H, W).
    ``timestamp``: seconds on the source's own clock; ``wall``: Unix time it was read."""

    index: int
    timestamp: float
    image: np.ndarray
    name: str
    truth: bool | None = None  # known defect label (synthetic scene, a truth CSV)
    wall: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Gap:
    """A stretch without frames from a live source: when it began (Unix time), how long it
    lasted, how many reopen attempts it took, and whether frames came back afterwards."""

    start: float
    seconds: float
    reopens: int
    recovered: bool = True


class FrameSource:
    """Iterable of :class:`Frame`; subclasses implement :meth:`_frames`.

    The base class applies ``max_frames`` and the ``fps`` cap so every source honours them
    the same way; subclasses apply ``every`` on their own frame positions (a video must
    still grab the frames it does not keep).
    """

    live: bool = False

    def __init__(
        self,
        label: str,
        *,
        every: int = 1,
        max_frames: int | None = None,
        fps: float | None = None,
        loop: bool = False,
        resize: tuple[int, int] | None = None,
    ) -> None:
        _check_options(every, max_frames, fps)
        self.label = label
        self.every = every
        self.max_frames = max_frames
        self.fps = fps
        self.loop = loop
        self.resize = resize
        self.dropped = 0
        self.skipped = 0
        self.left_out = 0  # frames passed over by ``every``
        self.closed = False
        self.gaps: list[Gap] = []  # live sources: stretches without frames (see LiveSource)
        self.truth: dict[int, bool] = {}  # known labels by frame index (e.g. `adedge video` CSV)
        # what the stream should record, in order (appended by the reading thread)
        self.events: deque[StreamEvent] = deque()

    def __iter__(self) -> Iterator[Frame]:
        if self.max_frames == 0:
            return
        pace = _Pacer(None if self.live else self.fps)
        for count, frame in enumerate(self._frames(), start=1):
            pace.wait()
            yield self._finish(frame)
            if self.max_frames is not None and count >= self.max_frames:
                return

    def _finish(self, frame: Frame) -> Frame:
        """Known truth and ``resize`` applied: the frame as it leaves the source."""
        if frame.truth is None and frame.index in self.truth:
            frame.truth = self.truth[frame.index]
        if self.resize is not None:
            frame.image = resize_frame(frame.image, self.resize)
        return frame

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def expected_frames(self) -> int | None:
        """How many frames this source will give, where known (for a progress bar)."""
        count = None if self.live or self.loop else self._positions()
        if count is not None:
            count = -(-count // self.every)  # positions kept by `every`
        if self.max_frames is None:
            return count
        return self.max_frames if count is None else min(count, self.max_frames)

    def _positions(self) -> int | None:
        """Frame positions in one pass over the source (before ``every``); None: unknown."""
        return None

    def _keep(self, position: int) -> bool:
        return position % self.every == 0

    def _kept(self, position: int) -> bool:
        """Whether ``every`` keeps this position; counts the ones it leaves out."""
        keep = self._keep(position)
        self.left_out += not keep
        return keep

    def take_events(self) -> list[StreamEvent]:
        """The events queued since the last call, oldest first (safe from any thread)."""
        taken = []
        while True:
            try:
                taken.append(self.events.popleft())
            except IndexError:
                return taken

    def describe(self) -> str:
        return self.label

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_options(every: int, max_frames: int | None, fps: float | None) -> None:
    if not isinstance(every, int) or every < 1:
        raise SourceError(f"every={every} is not a positive integer", "pass --every 1 or more")
    if max_frames is not None and max_frames < 0:
        raise SourceError(f"max_frames={max_frames} is negative", "pass 0 or more frames")
    if fps is not None and not fps > 0:
        raise SourceError(f"fps={fps} is not positive", "pass a rate such as --fps 10")


def conform_image(image: object) -> tuple[np.ndarray | None, tuple[str, ...], str | None]:
    """Make a frame's image what the detector and sinks expect: uint8 grey (H, W) or BGR
    (H, W, 3). Returns (image, conversions made, reason for rejection or None).

    Converted (each counted by reason): (H, W, 1) to grey, BGRA to BGR (alpha dropped),
    uint16 to uint8 (``>> 8``), float in [0, 1] to uint8 (``* 255``). Rejected: an empty
    image, 2 or more than 4 channels, other dimensions, float outside [0, 1] (or not finite),
    any other dtype. A custom source or a camera driver can hand over any of these; guessing
    a meaning for the rejected ones would score garbage.
    """
    if not isinstance(image, np.ndarray) or image.size == 0:
        return None, (), "empty"
    if image.ndim not in (2, 3):
        return None, (), f"{image.ndim} dimensions"
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in (1, 3, 4):
        return None, (), f"{channels} channels"
    floating = np.issubdtype(image.dtype, np.floating)
    if floating and not (np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0):
        return None, (), "float outside [0, 1]"
    if not floating and image.dtype not in (np.uint8, np.uint16):
        return None, (), f"dtype {image.dtype}"
    converted: list[str] = []
    if image.ndim == 3 and channels == 1:
        image = image[:, :, 0]
        converted.append("1 channel to grey")
    elif channels == 4:
        image = image[:, :, :3]
        converted.append("BGRA to BGR")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
        converted.append("uint16 to uint8")
    elif floating:
        image = (image * 255.0 + 0.5).astype(np.uint8)
        converted.append("float to uint8")
    return np.ascontiguousarray(image), tuple(converted), None


def resize_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image at ``size`` (W, H): area averaging to shrink (no aliasing), linear to grow."""
    width, height = size
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrink = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def parse_resize(text: str) -> tuple[int, int]:
    """``'640x480'`` -> (640, 480); anything else is a one-line SourceError."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None or min(int(match.group(1)), int(match.group(2))) < 1:
        raise SourceError(
            f"resize '{text}' is not WIDTHxHEIGHT in pixels", "pass e.g. --resize 640x480"
        )
    return check_resize((int(match.group(1)), int(match.group(2))))


def check_resize(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` (W, H) if each side is 1..MAX_SIDE (the largest image side adedge handles,
    as for a card); a one-line SourceError otherwise."""
    if min(size) < 1 or max(size) > MAX_SIDE:
        raise SourceError(
            f"resize {size[0]}x{size[1]} is outside 1..{MAX_SIDE} pixels per side",
            "pass a frame size such as --resize 640x480",
        )
    return size


class _Pacer:
    """Sleeps so that frames leave no faster than ``fps`` (None: no cap)."""

    def __init__(self, fps: float | None) -> None:
        self.period = 0.0 if fps is None else 1.0 / fps
        self.next_time: float | None = None

    def wait(self) -> None:
        if not self.period:
            return
        now = time.monotonic()
        if self.next_time is not None and now < self.next_time:
            time.sleep(self.next_time - now)
            now = self.next_time
        self.next_time = now + self.period


# --- image files -------------------------------------------------------------------------


class ImageFolderSource(FrameSource):
    """Image files in name order; ``name`` is the file path, unreadable files are skipped."""

    def __init__(self, spec: str, paths: list[Path], **options: Any) -> None:
        super().__init__(spec, **options)
        self.paths = paths
        self._opened = time.monotonic()

    def _frames(self) -> Iterator[Frame]:
        position = 0
        while not self.closed:
            produced = False
            for path in self.paths:
                index, position = position, position + 1
                if not self._kept(index):
                    continue
                image, problem = _read_bgr(path)
                if image is None:
                    self.skipped += 1
                    self.events.append(FrameSkipped(str(path), problem, position=index))
                    continue
                produced = True
                yield Frame(index, time.monotonic() - self._opened, image, str(path))
            if not (self.loop and produced):
                return

    def _positions(self) -> int | None:
        return len(self.paths)

    def describe(self) -> str:
        return f"images '{self.label}' ({len(self.paths)} files)"


def _read_bgr(path: Path) -> tuple[np.ndarray | None, str]:
    """(the image as BGR/grey uint8, "") or (None, why it cannot be decoded)."""
    try:
        image = read_image(path)
    except AdedgeError as exc:
        return None, exc.message
    return (cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image), ""


def _open_images(spec: str, **options: Any) -> ImageFolderSource:
    paths = expand_image_glob(spec)
    if not paths:
        kind = "folder" if Path(spec).is_dir() else "pattern"
        raise SourceError(
            f"no images in {kind} '{spec}'",
            f"put {', '.join(IMAGE_SUFFIXES[:4])} files there or check the pattern",
        )
    return ImageFolderSource(spec, paths, **options)


# --- video files -------------------------------------------------------------------------


class VideoFileSource(FrameSource):
    """Every frame of a video file, timestamped by its position in the video."""

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(path, **options)
        self.path = path
        self._cap = _open_video(path)
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.video_fps = float(self._cap.get(cv2.CAP_PROP_FPS)) or 25.0
        self.size = (
            int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )

    def _frames(self) -> Iterator[Frame]:
        base_index, base_time = 0, 0.0
        while not self.closed:
            count, produced = yield from self._one_pass(base_index, base_time)
            if not (self.loop and produced) or self.closed:
                return
            base_index += count
            base_time += count / self.video_fps
            self._cap.release()
            self._cap = _open_video(self.path)

    def _one_pass(
        self, base_index: int, base_time: float
    ) -> Generator[Frame, None, tuple[int, bool]]:
        """Frames of one pass over the file; returns (positions read, any frame produced).

        A failed grab is a corrupt frame if a later grab succeeds (counted as skipped), the
        end of the file if it is past the frame count or ``VIDEO_EOF_RETRIES`` fail in a row
        (failures just before the end are not counted: the frame count may be an estimate).
        """
        position, failed, produced = 0, [], False
        while not self.closed:
            if not self._cap.grab():
                if 0 < self.frame_count <= position or len(failed) + 1 >= VIDEO_EOF_RETRIES:
                    return position - len(failed), produced
                failed.append(position)
                position += 1
                continue
            self._skip_corrupt([base_index + p for p in failed if self._kept(base_index + p)])
            failed = []
            index, position = base_index + position, position + 1
            if not self._kept(index):
                continue
            ok, image = self._cap.retrieve()
            if not ok or image is None or image.size == 0:
                self._skip_corrupt([index])
                continue
            produced = True
            timestamp = base_time + self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1e3
            yield Frame(index, timestamp, image, self.path)
        return position, produced

    def _skip_corrupt(self, positions: list[int]) -> None:
        self.skipped += len(positions)
        for position in positions:
            self.events.append(FrameSkipped(self.path, "frame cannot be decoded", position))

    def _positions(self) -> int | None:
        return self.frame_count if self.frame_count > 0 else None

    def describe(self) -> str:
        width, height = self.size
        return (
            f"video '{self.path}' ({self.frame_count} frames, {width}x{height} "
            f"@ {self.video_fps:g} fps)"
        )

    def close(self) -> None:
        super().close()
        self._cap.release()


def _open_video(path: str) -> cv2.VideoCapture:
    if not Path(path).is_file():
        raise SourceError(
            f"cannot open video '{path}': no such file",
            "check the path, or pass a folder of images, camera0 or synthetic",
        )
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise SourceError(
            f"cannot open video '{path}': OpenCV cannot decode it",
            "check the path and codec, or re-encode it, e.g. `ffmpeg -i IN -c:v mjpeg out.avi`",
        )
    return cap


# --- live sources (cameras, network streams) ---------------------------------------------


class LiveSource(FrameSource):
    """A camera or stream read by a thread that keeps only the newest frame.

    A read failure closes and reopens the capture after an exponential back-off
    (``backoff`` seconds, doubling, at most ``backoff_cap``); after ``max_reopen``
    consecutive failures the source ends. A successful read resets the count. Each
    stretch without frames is appended to ``gaps`` (:class:`Gap`) once frames come back, or
    when the source ends during it after at least one reopen attempt; as it happens, the
    stretch's start, every reopen attempt and its end are queued in ``events``.

    A stream reads it with :meth:`take` (a frame, or nothing yet, without blocking for
    long), so it can record events while no frame comes; iterating works too.
    """

    live = True

    def __init__(
        self,
        label: str,
        open_capture: Callable[[], cv2.VideoCapture],
        *,
        fail: SourceError,
        max_reopen: int = 8,
        backoff: float = 0.25,
        backoff_cap: float = 5.0,
        **options: Any,
    ) -> None:
        super().__init__(label, **options)
        self._open_capture = open_capture
        self._cap = _quietly(open_capture)
        if not self._cap.isOpened():
            self._cap.release()
            raise fail
        self.max_reopen = max_reopen
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.reopened = 0
        self._opened = time.monotonic()
        self._latest: Frame | None = None
        self._ended = False
        self._stop = threading.Event()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    def _frames(self) -> Iterator[Frame]:
        while True:
            # short waits keep Ctrl-C responsive on every platform
            frame = self.take(0.5, wake_on_events=False)
            if frame is not None:
                yield frame
            elif self.ended:
                return

    @property
    def ended(self) -> bool:
        """The capture thread stopped and its last frame was taken."""
        with self._ready:
            return self._ended and self._latest is None

    def take(self, timeout: float, *, wake_on_events: bool = True) -> Frame | None:
        """The newest frame not yet taken (waiting up to ``timeout`` s for one), or None:
        none yet, an event is waiting in ``events`` (``wake_on_events``), or the end."""
        self._start()
        with self._ready:
            self._ready.wait_for(
                lambda: (
                    self._latest is not None
                    or self._ended
                    or (wake_on_events and bool(self.events))
                ),
                timeout=timeout,
            )
            frame, self._latest = self._latest, None
        return None if frame is None else self._finish(frame)

    def _start(self) -> None:
        if self._thread is None and not self.closed:
            self._thread = threading.Thread(
                target=self._capture, name=f"adedge-capture {self.label}", daemon=True
            )
            self._thread.start()

    def _capture(self) -> None:
        """Thread body: read, keep the newest frame, reopen on failure, release at the end."""
        position, failures, attempts = 0, 0, 0
        gap: tuple[float, float] | None = None  # (Unix time, monotonic) of the first failure
        try:
            while not self._stop.is_set():
                ok, image = self._cap.read()
                if not ok or image is None or image.size == 0:
                    if gap is None:
                        gap, attempts = (time.time(), time.monotonic()), 0
                        self._record(GapStarted(self.label, position - 1 if position else None))
                    failures += 1
                    if failures > self.max_reopen or not self._reopen(failures):
                        return
                    attempts += 1
                    continue
                if gap is not None:
                    self._close_gap(gap, attempts, recovered=True)
                    gap = None
                failures = 0
                index, position = position, position + 1
                if self._kept(index):
                    self._publish(Frame(index, self._source_time(), image, self.label))
        finally:
            if gap is not None and attempts:  # ended while reopening: the gap never closed
                self._close_gap(gap, attempts, recovered=False)
            self._cap.release()
            with self._ready:
                self._ended = True
                self._ready.notify_all()

    def _source_time(self) -> float:
        """The capture's own timestamp of the frame just read (seconds), where it reports
        one (network streams' presentation times), else the time since the source opened."""
        stamp = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        if stamp and stamp > 0 and np.isfinite(stamp):
            return float(stamp) / 1e3
        return time.monotonic() - self._opened

    def _record(self, event: StreamEvent) -> None:
        with self._ready:
            self.events.append(event)
            self._ready.notify_all()

    def _close_gap(self, gap: tuple[float, float], attempts: int, *, recovered: bool) -> None:
        start, since = gap
        seconds = time.monotonic() - since
        with self._ready:
            self.gaps.append(Gap(start, seconds, attempts, recovered))
        self._record(GapEnded(self.label, seconds, attempts, recovered))

    def _publish(self, frame: Frame) -> None:
        with self._ready:
            if self._latest is not None:
                self.dropped += 1
            self._latest = frame
            self._ready.notify_all()

    def _reopen(self, failures: int) -> bool:
        """Wait the back-off, then reopen; False when asked to stop meanwhile."""
        delay = min(self.backoff * 2 ** (failures - 1), self.backoff_cap)
        if self._stop.wait(delay):
            return False
        self._cap.release()
        self._cap = _quietly(self._open_capture)
        opened = self._cap.isOpened()
        self.reopened += opened
        following = min(self.backoff * 2**failures, self.backoff_cap)
        last = failures >= self.max_reopen
        self._record(Reconnect(self.label, failures, opened, None if opened or last else following))
        return True

    def describe(self) -> str:
        return f"{self.label} (live, newest frame kept)"

    def close(self) -> None:
        super().close()
        self._stop.set()
        if self._thread is None:
            self._cap.release()
            with self._ready:
                self._ended = True
                self._ready.notify_all()
        else:
            self._thread.join(timeout=3.0)


def _quietly(open_capture: Callable[[], cv2.VideoCapture]) -> cv2.VideoCapture:
    """Open with OpenCV's warnings silenced: a failure becomes our own one-line error."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        return open_capture()
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        return open_capture()
    finally:
        logging.setLogLevel(level)


def _open_camera(spec: str, target: int | str, **options: Any) -> LiveSource:
    if isinstance(target, int):
        label = f"camera{target}"
        fail = SourceError(
            f"no camera at index {target} ('{spec}')",
            "list cameras with `v4l2-ctl --list-devices`, or pass a video file or synthetic",
        )
        return LiveSource(label, lambda: cv2.VideoCapture(target), fail=fail, **options)
    fail = SourceError(
        f"no camera at '{target}'"
        + ("" if Path(target).exists() else " (no such device)")
        + (" or it is busy/not permitted" if Path(target).exists() else ""),
        "list cameras with `v4l2-ctl --list-devices`; check the video group, or pass a file",
    )
    return LiveSource(target, lambda: cv2.VideoCapture(target, cv2.CAP_V4L2), fail=fail, **options)


_FFMPEG_ENV_LOCK = threading.Lock()


def split_transport(url: str) -> tuple[str, str | None]:
    """``rtsp://host/path?transport=udp`` -> (the URL without it, "udp"); the parameter is
    ours (FFmpeg's ``rtsp_transport``), so the camera never sees it. Other URLs and other
    query parameters pass unchanged."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    transport = [value for key, value in pairs if key == "transport"]
    if not transport:
        return url, None
    value = transport[-1].lower()
    scheme = parts.scheme.lower()
    if scheme not in ("rtsp", "rtsps") or value not in RTSP_TRANSPORTS:
        raise SourceError(
            f"'transport={transport[-1]}' in '{redact_url(url)}' is not understood",
            f"use rtsp://...?transport={'|'.join(RTSP_TRANSPORTS)} (RTSP sources only)",
        )
    query = "&".join(f"{k}={v}" if v else k for k, v in pairs if k != "transport")
    return urlunsplit(parts._replace(query=query)), value


def ffmpeg_capture_options(transport: str | None, scheme: str) -> str:
    """The FFmpeg options a network source opens with (OPENCV_FFMPEG_CAPTURE_OPTIONS)."""
    if scheme.lower() in ("rtsp", "rtsps"):
        return f"rtsp_transport;{transport or 'tcp'}|{LOW_LATENCY_FFMPEG}"
    return LOW_LATENCY_FFMPEG


def _open_network(url: str, **options: Any) -> LiveSource:
    url, transport = split_transport(url)
    scheme = urlsplit(url).scheme
    label = redact_url(url)
    user_options = os.environ.get(FFMPEG_OPTIONS_ENV)
    ffmpeg_options = user_options or ffmpeg_capture_options(transport, scheme)
    if user_options and transport:
        raise SourceError(
            f"'transport={transport}' in '{label}' and {FFMPEG_OPTIONS_ENV} both set FFmpeg's "
            "options",
            f"unset {FFMPEG_OPTIONS_ENV} or leave transport= out of the URL",
        )
    fail = SourceError(
        f"cannot open stream '{label}'",
        "check the URL, credentials and network (try it in `ffplay`), or pass a video file"
        + ("; behind a firewall try ?transport=tcp" if transport == "udp" else ""),
    )

    def open_capture() -> cv2.VideoCapture:
        # OpenCV reads the variable when a capture opens: set it for this open only (the
        # lock keeps two sources' reopen threads from seeing each other's options)
        with _FFMPEG_ENV_LOCK:
            previous = os.environ.get(FFMPEG_OPTIONS_ENV)
            os.environ[FFMPEG_OPTIONS_ENV] = ffmpeg_options
            try:
                return cv2.VideoCapture(url, cv2.CAP_FFMPEG)
            finally:
                if previous is None:
                    os.environ.pop(FFMPEG_OPTIONS_ENV, None)
                else:
                    os.environ[FFMPEG_OPTIONS_ENV] = previous

    return LiveSource(label, open_capture, fail=fail, **options)


@dataclass(frozen=True)
class CsiOptions:
    """A Jetson CSI capture: ``csi://SENSOR?width=W&height=H&framerate=F&flip=M``."""

    sensor: int = 0
    width: int = 1280
    height: int = 720
    framerate: int = 30
    flip: int = 0  # nvvidconv flip-method: 0 none, 2 rotate 180, ...


def parse_csi(spec: str) -> CsiOptions:
    """Read ``csi://0?width=1920&height=1080&framerate=30&flip=2`` (all but the sensor optional)."""
    parts = urlsplit(spec)
    sensor_text = (parts.netloc + parts.path).strip("/") or "0"
    values: dict[str, int] = {}
    try:
        values["sensor"] = int(sensor_text)
        for key, value in parse_qsl(parts.query, strict_parsing=bool(parts.query)):
            if key not in ("width", "height", "framerate", "flip"):
                raise KeyError(key)
            values[key] = int(value)
    except (ValueError, KeyError) as exc:
        raise SourceError(
            f"cannot read the CSI source '{spec}' ({type(exc).__name__}: {exc})",
            "use csi://SENSOR?width=1280&height=720&framerate=30&flip=0 (integers)",
        ) from None
    csi = CsiOptions(**values)
    if min(csi.width, csi.height, csi.framerate) <= 0 or not 0 <= csi.flip <= 7:
        raise SourceError(
            f"CSI options in '{spec}' are out of range",
            "width, height and framerate must be positive, flip 0-7",
        )
    return csi


def csi_pipeline(csi: CsiOptions) -> str:
    """The GStreamer pipeline OpenCV opens for a Jetson CSI sensor.

    The sensor's NVMM buffers are converted by the hardware (nvvidconv) to BGRx, then to
    BGR for OpenCV; ``appsink drop=1 max-buffers=1`` keeps only the newest frame, as every
    live source here does.
    """
    return (
        f"nvarguscamerasrc sensor-id={csi.sensor} ! "
        f"video/x-raw(memory:NVMM), width={csi.width}, height={csi.height}, "
        f"framerate={csi.framerate}/1 ! "
        f"nvvidconv flip-method={csi.flip} ! video/x-raw, format=BGRx ! "
        "videoconvert ! video/x-raw, format=BGR ! appsink drop=1 max-buffers=1"
    )


def _open_csi(spec: str, **options: Any) -> LiveSource:
    csi = parse_csi(spec)
    if not re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()):
        raise SourceError(
            f"'{spec}' needs OpenCV built with GStreamer and this OpenCV has none",
            "on a Jetson use JetPack's OpenCV (uninstall opencv-python-headless from the venv, "
            "create it with --system-site-packages)",
        )
    pipeline = csi_pipeline(csi)
    fail = SourceError(
        f"cannot open CSI camera {csi.sensor} ('{spec}')",
        "check the ribbon cable and `nvargus-daemon` (sudo systemctl restart nvargus-daemon)",
    )
    return LiveSource(
        f"csi{csi.sensor}",
        lambda: cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER),
        fail=fail,
        **options,
    )


def redact_url(url: str) -> str:
    """The URL without its password, so it can be logged and written to events."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


# --- synthetic scene ---------------------------------------------------------------------


SYNTHETIC_FPS = 25.0  # timestamps are index / fps (the --fps cap where one is given)
SYNTHETIC_OPTIONS = ("seed", "size", "frames", "defect_every", "defect_first", "texture")
DRIFT_PERIODS = (53.0, 71.0)  # frames per sway along x and y: slow, and never in step


@dataclass(frozen=True)
class SceneOptions:
    seed: int = 0
    width: int = 256
    height: int = 256
    frames: int | None = None
    defect_every: int = 10
    defect_first: int = 5
    texture: str | None = None  # one of REAL_TEXTURES; None: the procedural surface


class SyntheticSource(FrameSource):
    """A textured surface moving slightly from frame to frame, with defects at known frames.

    Frame ``t`` depends only on (seed, t). The default surface is procedural and periodic
    (built in the Fourier domain), so drifting by ``np.roll`` never reveals an edge and
    leaves the frame mean unchanged. ``texture=brick|grass|gravel`` shows a real photograph
    instead (scikit-image's ``skimage.data``), scaled to cover the frame plus a small margin
    and swaying within that margin like a vibrating camera. Only the motion, sensor noise
    and the defects vary. ``frames=N`` makes the scene N frames long (endless otherwise).
    Defects (scratch, dark blob, stain, missing patch, in turn) appear on frames
    ``defect_first + k * defect_every`` and those frames carry ``truth=True``.
    """

    def __init__(self, spec: str, scene: SceneOptions, **options: Any) -> None:
        super().__init__(spec, **options)
        self.scene = scene
        self.nominal_fps = self.fps or SYNTHETIC_FPS
        if scene.texture is None:
            self.margin = 0
            self.texture = surface_texture(scene.height, scene.width, scene.seed)
        else:
            self.margin = max(2, min(scene.width, scene.height) // 32)
            grey = fit_texture(load_real_texture(scene.texture), scene, self.margin)
            self.texture = np.repeat(grey[:, :, None], 3, axis=2)
        self._phase = np.random.default_rng([scene.seed, 7]).uniform(0, 2 * np.pi, 2)

    def is_defect(self, index: int) -> bool:
        every, first = self.scene.defect_every, self.scene.defect_first
        return every > 0 and index >= first and (index - first) % every == 0

    def background(self, index: int) -> np.ndarray:
        """The moved surface of frame ``index``, float32 BGR, before noise and defects."""
        height, width = self.scene.height, self.scene.width
        if self.scene.texture is None:
            return np.roll(self.texture, (index % height, (2 * index) % width), (0, 1))
        sway = np.sin(2 * np.pi * index / np.asarray(DRIFT_PERIODS) + self._phase)
        dx, dy = (np.rint(self.margin * (1.0 + sway))).astype(int)
        return self.texture[dy : dy + height, dx : dx + width]

    def render(self, index: int) -> np.ndarray:
        """Frame ``index`` as BGR uint8 (deterministic)."""
        image = self.background(index)
        rng = np.random.default_rng([self.scene.seed, index])
        image = image + rng.normal(0.0, 2.0, image.shape).astype(np.float32)
        if self.is_defect(index):
            kind = (index - self.scene.defect_first) // self.scene.defect_every
            image = add_defect(image, DEFECT_KINDS[kind % len(DEFECT_KINDS)], rng)
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)

    def _frames(self) -> Iterator[Frame]:
        index = 0
        while not self.closed and (self.scene.frames is None or index < self.scene.frames):
            if self._kept(index):
                yield Frame(
                    index,
                    index / self.nominal_fps,
                    self.render(index),
                    "synthetic",
                    truth=self.is_defect(index),
                )
            index += 1

    def _positions(self) -> int | None:
        return self.scene.frames

    def describe(self) -> str:
        s = self.scene
        defects = (
            f"defects every {s.defect_every} frames from frame {s.defect_first}"
            if s.defect_every > 0
            else "no defects"
        )
        surface = "" if s.texture is None else f" on real texture '{s.texture}' (scikit-image)"
        return f"synthetic scene {s.width}x{s.height}{surface} seed={s.seed}, {defects}"


def load_real_texture(name: str) -> np.ndarray:
    """scikit-image's bundled photograph ``name`` (512x512 grey uint8), or a SourceError."""
    if name not in REAL_TEXTURES:
        raise SourceError(
            f"synthetic texture '{name}' is not known", f"use one of {', '.join(REAL_TEXTURES)}"
        )
    try:
        return read_texture(name)
    except ImportError:
        raise SourceError(
            f"synthetic texture '{name}' needs scikit-image, which is not installed",
            "pip install scikit-image (or leave out texture= for the procedural surface)",
        ) from None
    except (OSError, ValueError) as exc:
        raise SourceError(
            f"scikit-image cannot load its texture '{name}' ({exc})", "reinstall scikit-image"
        ) from None


def fit_texture(grey: np.ndarray, scene: SceneOptions, margin: int) -> np.ndarray:
    """Scale ``grey`` uniformly to cover the frame plus ``margin`` on every side, then crop
    the centre: float32 (height + 2 margin, width + 2 margin)."""
    want_h, want_w = scene.height + 2 * margin, scene.width + 2 * margin
    scale = max(want_h / grey.shape[0], want_w / grey.shape[1])
    size = (max(want_w, round(grey.shape[1] * scale)), max(want_h, round(grey.shape[0] * scale)))
    shrink = scale < 1.0
    scaled = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    top, left = (size[1] - want_h) // 2, (size[0] - want_w) // 2
    return scaled[top : top + want_h, left : left + want_w].astype(np.float32)


def _periodic_noise(rng: np.random.Generator, height: int, width: int, sigma: float) -> np.ndarray:
    """White noise blurred by a Gaussian of ``sigma`` px with wrap-around (via the FFT)."""
    noise = rng.standard_normal((height, width))
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    smooth = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(height, width))
    return smooth / (smooth.std() + 1e-12)


def surface_texture(height: int, width: int, seed: int) -> np.ndarray:
    """A tileable grey-brown texture, float32 BGR in about [40, 200]."""
    rng = np.random.default_rng(seed)
    scale = min(height, width) / 256.0
    octaves = ((24.0, 1.0), (8.0, 0.5), (3.0, 0.3), (1.0, 0.15))
    field = sum(amp * _periodic_noise(rng, height, width, sigma * scale) for sigma, amp in octaves)
    field = (field - field.mean()) / field.std()
    grey = np.clip(120.0 + 22.0 * field, 40.0, 200.0)
    tint = np.array([0.82, 0.93, 1.06], dtype=np.float32)  # B, G, R: brownish grey
    return (grey[:, :, None] * tint).astype(np.float32)


def parse_synthetic(spec: str) -> SceneOptions:
    """``synthetic[:key=value,...]`` -> SceneOptions; a bad option is a SourceError."""
    values = _synthetic_values(spec)
    texture = values.get("texture")
    if texture is not None and texture not in REAL_TEXTURES:
        raise SourceError(
            f"synthetic texture '{texture}' in '{spec}' is not known",
            f"use texture={'|'.join(REAL_TEXTURES)}, or leave it out for the procedural surface",
        )
    try:
        width, height = _parse_size(values.get("size", "256"))
        scene = SceneOptions(
            seed=int(values.get("seed", 0)),
            width=width,
            height=height,
            frames=int(values["frames"]) if "frames" in values else None,
            defect_every=int(values.get("defect_every", 10)),
            defect_first=int(values.get("defect_first", 5)),
            texture=texture,
        )
    except ValueError:
        raise SourceError(
            f"synthetic options in '{spec}' have a value of the wrong type",
            "seed, frames, defect_every, defect_first take integers; size takes N or WxH",
        ) from None
    if min(width, height) < 16 or (scene.frames is not None and scene.frames < 0):
        raise SourceError(
            f"synthetic options in '{spec}' are out of range", "use size >= 16 and frames >= 0"
        )
    return scene


def _synthetic_values(spec: str) -> dict[str, str]:
    """The ``key=value`` pairs after ``synthetic:``, each key checked against the known ones."""
    _, _, text = spec.partition(":")
    values: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in SYNTHETIC_OPTIONS:
            raise SourceError(
                f"synthetic option '{item}' in '{spec}' is not understood",
                f"use {', '.join(SYNTHETIC_OPTIONS)}, e.g. synthetic:seed=1,size=256,texture=brick",
            )
        values[key] = value.strip()
    return values


def _parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height or width)


# --- the one entry point -----------------------------------------------------------------


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


def file_uri_path(uri: str) -> str:
    """``file:///abs/x.mp4`` -> ``/abs/x.mp4``; ``file://rel/x.mp4`` -> ``rel/x.mp4``."""
    parts = urlsplit(uri)
    host = "" if parts.netloc in ("", "localhost") else parts.netloc
    return unquote(host + parts.path)


def _open_path(path: str, **options: Any) -> FrameSource:
    """A folder, a glob or a single image are images; any other path is a video file."""
    target = Path(path)
    is_glob = any(c in path for c in GLOB_CHARS)
    is_image = target.suffix.lower() in IMAGE_SUFFIXES
    if target.is_dir() or is_glob or is_image:
        if is_image and not is_glob and not target.exists():
            raise SourceError(f"image '{path}' does not exist", "check the path")
        return _open_images(path, **options)
    return VideoFileSource(path, **options)
