"""Live sources: USB/V4L2 cameras, network streams (RTSP, HTTP) through FFmpeg, and Jetson CSI
cameras through GStreamer.

A capture thread keeps only the newest frame: a slow model sees the present, never a growing
backlog, and every frame it misses is counted in ``dropped``. A camera that stops
delivering is reopened with exponential back-off; each stretch without frames is a
:class:`Gap`, and its start, every reopen attempt and its end are queued in ``events`` as
they happen.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from adedge.errors import SourceError
from adedge.runtime.records import GapEnded, GapStarted, Reconnect, StreamEvent
from adedge.runtime.sources.base import Frame, FrameSource, Gap
from adedge.uri import Uri, parse_uri, redact_url

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")
RTSP_SCHEMES = ("rtsp", "rtsps")
TRANSPORT_OPTION = "transport"  # ours (FFmpeg's rtsp_transport): taken out of the URL


FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# No input buffering, low-delay decoding: a detector wants the present frame, not a smooth
# replay. RTSP runs over TCP unless the URL says ``?transport=udp`` (no lost UDP packets
# smearing frames). A user's own OPENCV_FFMPEG_CAPTURE_OPTIONS wins over both.
LOW_LATENCY_FFMPEG = "fflags;nobuffer|flags;low_delay"
RTSP_TRANSPORTS = ("tcp", "udp")


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


def split_transport(url: str | Uri) -> tuple[str, str | None]:
    """``rtsp://host/path?transport=udp`` -> (the URL without it, "udp"); the parameter is
    ours (FFmpeg's ``rtsp_transport``), so the camera never sees it. Other URLs and other
    query parameters pass unchanged, as typed."""
    uri = url if isinstance(url, Uri) else parse_uri(url)
    rest, transport = uri.take_option(TRANSPORT_OPTION)
    if not transport:
        return uri.text, None
    value = transport[-1].lower()
    if uri.scheme not in RTSP_SCHEMES or value not in RTSP_TRANSPORTS:
        raise SourceError(
            f"'{TRANSPORT_OPTION}={transport[-1]}' in '{uri}' is not understood",
            f"use rtsp://...?transport={'|'.join(RTSP_TRANSPORTS)} (RTSP sources only)",
        )
    return rest.text, value


def ffmpeg_capture_options(transport: str | None, scheme: str) -> str:
    """The FFmpeg options a network source opens with (OPENCV_FFMPEG_CAPTURE_OPTIONS)."""
    if scheme.lower() in RTSP_SCHEMES:
        return f"rtsp_transport;{transport or 'tcp'}|{LOW_LATENCY_FFMPEG}"
    return LOW_LATENCY_FFMPEG


def _open_network(uri: Uri, **options: Any) -> LiveSource:
    url, transport = split_transport(uri)
    label = redact_url(url)
    user_options = os.environ.get(FFMPEG_OPTIONS_ENV)
    ffmpeg_options = user_options or ffmpeg_capture_options(transport, uri.scheme)
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


CSI_OPTIONS = tuple(f.name for f in fields(CsiOptions) if f.name != "sensor")
CSI_HINT = "use csi://SENSOR?width=1280&height=720&framerate=30&flip=0 (integers)"


def parse_csi(spec: str | Uri) -> CsiOptions:
    """Read ``csi://0?width=1920&height=1080&framerate=30&flip=2`` (all but the sensor optional)."""
    uri = spec if isinstance(spec, Uri) else parse_uri(spec)

    def not_understood(item: str) -> SourceError:
        return SourceError(
            f"cannot read the CSI source '{uri}' (option '{item}' is not understood)", CSI_HINT
        )

    try:
        sensor = int(uri.location.strip("/") or "0")
        values = {k: int(v) for k, v in uri.values(not_understood, CSI_OPTIONS).items()}
    except ValueError as exc:
        raise SourceError(
            f"cannot read the CSI source '{uri}' ({type(exc).__name__}: {exc})", CSI_HINT
        ) from None
    csi = CsiOptions(sensor=sensor, **values)
    if min(csi.width, csi.height, csi.framerate) <= 0 or not 0 <= csi.flip <= 7:
        raise SourceError(
            f"CSI options in '{uri}' are out of range",
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


def _open_csi(uri: Uri, **options: Any) -> LiveSource:
    csi = parse_csi(uri)
    if not re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()):
        raise SourceError(
            f"'{uri}' needs OpenCV built with GStreamer and this OpenCV has none",
            "on a Jetson use JetPack's OpenCV (uninstall opencv-python-headless from the venv, "
            "create it with --system-site-packages)",
        )
    pipeline = csi_pipeline(csi)
    fail = SourceError(
        f"cannot open CSI camera {csi.sensor} ('{uri}')",
        "check the ribbon cable and `nvargus-daemon` (sudo systemctl restart nvargus-daemon)",
    )
    return LiveSource(
        f"csi{csi.sensor}",
        lambda: cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER),
        fail=fail,
        **options,
    )
