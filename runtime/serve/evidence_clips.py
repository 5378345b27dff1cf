"""An event's clip: a per-camera pre-roll ring buffer (:class:`PreRoll`) and the MP4 of one
event from its pre-roll to its post-roll (:class:`ClipRecorder`), written under a hidden
temporary name and renamed into place when finished, so a file under its final name always
plays. Both run in a camera's thread: a clip encodes at most ``1 + CLIP_CATCH_UP`` frames
per frame it is given. Importable from :mod:`adedge.runtime.serve.evidence` too.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from adedge.atomic import remove_stale_temporaries, temporary_sibling
from adedge.errors import AdedgeError
from adedge.runtime.sinks.files import VIDEO_CODECS, open_video_writer

FALLBACK_CLIP_FPS = 10.0  # a clip's rate when none is given and the pre-roll cannot tell
CLIP_CATCH_UP = 1  # pre-roll frames a clip encodes per new frame, besides the new one
MAX_CLIP_SECONDS = 120.0  # a clip stops here even if its event goes on


class PreRoll:
    """A camera's last ``seconds`` of (wall time, frame), at most ``max_frames`` of them and,
    where ``max_bytes`` is set, at most that many bytes of frames (a 1080p frame is 6 MB:
    25 fps for 3 s is 466 MB). Frames are kept by reference: the caller must not change
    one after adding it."""

    def __init__(self, seconds: float, max_frames: int = 600, max_bytes: int | None = None):
        self.seconds = float(seconds)
        self.max_frames = max(0, int(max_frames))
        self.max_bytes = max_bytes
        self._frames: deque[tuple[float, np.ndarray]] = deque()
        self._bytes = 0

    def add(self, wall: float, frame: np.ndarray) -> None:
        if self.seconds <= 0 or self.max_frames == 0:
            return
        self._frames.append((wall, frame))
        self._bytes += frame.nbytes
        while self._frames and (
            wall - self._frames[0][0] > self.seconds
            or len(self._frames) > self.max_frames
            or (self.max_bytes is not None and self._bytes > self.max_bytes)
        ):
            self._bytes -= self._frames.popleft()[1].nbytes

    def frames(self) -> list[tuple[float, np.ndarray]]:
        return list(self._frames)

    def clear(self) -> None:
        self._frames.clear()
        self._bytes = 0


def estimate_fps(walls: list[float]) -> float | None:
    """The frame rate the median interval between ``walls`` gives (within 0.5..120 fps);
    None with fewer than two distinct times."""
    steps = np.diff(np.asarray(walls, dtype=np.float64))
    steps = steps[np.isfinite(steps) & (steps > 0)]
    if not steps.size:
        return None
    return float(np.clip(1.0 / np.median(steps), 0.5, 120.0))


class ClipRecorder:
    """One event's MP4 clip (``mp4v``): the pre-roll, the frames while the event lasts,
    then ``post_seconds`` more after :meth:`end_event`.

    The file is written under a hidden temporary name beside ``path`` and renamed into
    place by :meth:`finish` (an MP4 plays only once closed). The size is the first frame's,
    cut to even sides (the codec needs them); other sizes are resized to it, grey frames
    made BGR. ``fps`` None: estimated from the pre-roll's times, else 10. The pre-roll is
    encoded ``CLIP_CATCH_UP`` frames per added frame (no burst at the start of an event);
    :meth:`finish` writes whatever is left. The clip ends (``done``) after ``max_seconds``
    of video even if the event goes on. Thread-safe: a camera thread adds while a shutdown
    finishes. OpenCV failing to write raises :class:`AdedgeError`.
    """

    def __init__(
        self,
        path: Path,
        pre: list[tuple[float, np.ndarray]],
        post_seconds: float,
        fps: float | None,
        *,
        max_seconds: float | None = MAX_CLIP_SECONDS,
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise AdedgeError(f"clip '{self.path}' must be an .mp4", "name it <event>.mp4")
        self.post_seconds = max(0.0, float(post_seconds))
        self.fps = fps or estimate_fps([wall for wall, _ in pre]) or FALLBACK_CLIP_FPS
        self.max_frames = None if max_seconds is None else max(1, round(max_seconds * self.fps))
        self.frames_written = 0
        self._pending: deque[np.ndarray] = deque(frame for _, frame in pre)
        self._accepted = len(self._pending)
        self._stop_at: float | None = None
        self._done = False
        self._finished = False
        self._final: Path | None = None
        self._writer: cv2.VideoWriter | None = None
        self._temporary: Path | None = None
        self._size: tuple[int, int] | None = None  # (width, height) of the first frame
        self._lock = threading.Lock()

    def add(self, wall: float, frame: np.ndarray) -> None:
        """A frame of the event or its post-roll; ignored once the clip is done."""
        with self._lock:
            if self._done or self._finished:
                return
            if self._stop_at is not None and wall > self._stop_at:
                self._done = True
                return
            self._pending.append(frame)
            self._accepted += 1
            if self.max_frames is not None and self._accepted >= self.max_frames:
                self._done = True
            for _ in range(min(len(self._pending), 1 + CLIP_CATCH_UP)):
                self._write(self._pending.popleft())

    def end_event(self, wall: float) -> None:
        """The event ended at ``wall``: frames up to ``wall + post_seconds`` still go in."""
        with self._lock:
            self._stop_at = wall + self.post_seconds
            if self.post_seconds == 0:
                self._done = True

    @property
    def done(self) -> bool:
        """The post-roll is complete (or the clip reached its longest): call :meth:`finish`."""
        return self._done

    def finish(self) -> Path | None:
        """Write what is pending, close the file and rename it into place; also when the
        event is still going (shutdown). Returns the clip's path, None when no frame was
        written. Safe to call twice."""
        with self._lock:
            if self._finished:
                return self._final
            self._finished = self._done = True
            try:
                while self._pending:
                    self._write(self._pending.popleft())
            finally:  # a failing frame still leaves the clip of the frames before it
                self._pending.clear()
                self._close()
                if self.frames_written and self._temporary is not None:
                    os.replace(self._temporary, self.path)
                    self._final = self.path
                else:
                    self._discard()
            return self._final

    def abort(self) -> None:
        """Drop the clip: close and delete the temporary file."""
        with self._lock:
            self._finished = self._done = True
            self._pending.clear()
            self._close()
            self._discard()

    def _write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            self._open(frame)
        width, height = self._size
        if frame.shape[0] != height or frame.shape[1] != width:
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        image = frame[: height & ~1, : width & ~1]
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = image[:, :, :3]
        self._writer.write(np.ascontiguousarray(image, dtype=np.uint8))
        self.frames_written += 1

    def _open(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if width < 2 or height < 2:
            raise AdedgeError(f"clip '{self.path}': a {width}x{height} frame is too small")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        self._temporary = temporary_sibling(self.path)
        self._size = (width, height)
        even = (width & ~1, height & ~1)
        writer = open_video_writer(self._temporary, VIDEO_CODECS[".mp4"], self.fps, even)
        if not writer.isOpened():
            writer.release()
            self._discard()
            raise AdedgeError(
                f"OpenCV cannot write clip '{self.path}' with codec {VIDEO_CODECS['.mp4']}",
                "install an OpenCV build with FFmpeg (opencv-python-headless has it)",
            )
        self._writer = writer

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def _discard(self) -> None:
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)
            self._temporary = None
