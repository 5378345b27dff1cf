"""Record streams written under their real names as they are produced, so ``tail -f``, Fluent
Bit or Filebeat see every record while the stream runs, and a kill -9, an OOM kill or a
power cut loses at most the last second:

* JSONL is an append-only log: each record is one ``write`` of one whole line, flushed at
  once (a killed process leaves whole lines), and fsynced at most ``fsync_seconds`` after
  it was written (a power cut). The file is opened when the first record is written, so a
  stream that fails before it starts leaves an existing file as it was.
* Video goes into a container that stays playable when cut (.avi MJPG, written frame by
  frame by OpenCV's own writer: a kill loses the frame in hand; .mkv FFV1, through FFmpeg,
  whose buffer may hold the last megabyte), or, for .mp4 (whose index is written only when
  the file is closed), into segments of ``segment_seconds`` under their final names
  (``out-000.mp4``, ``out-001.mp4``...), each playable once the next begins.

An existing target holding an earlier run is refused unless the user passes ``--overwrite``
or (JSONL) ``--append`` (:mod:`adedge.outputs`). Hidden ``.<name>.*.partial*`` files that
adedge before 0.2 left after a kill are renamed to visible ``<stem>.recovered-<time>``
files (they hold that run's only copy of its records) and reported.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import cv2

from adedge.atomic import glob_escape
from adedge.errors import AdedgeError
from adedge.outputs import STDOUT, Existing, check_record_target
from adedge.runtime.detector import FrameScore
from adedge.runtime.records import StreamEvent, frame_record
from adedge.runtime.sinks.annotate import HeatmapScale, annotate
from adedge.runtime.sinks.base import Log
from adedge.runtime.sources import Frame

VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "FFV1"}  # every video adedge writes
# .avi through OpenCV's own MJPEG writer: it writes each frame as it comes (FFmpeg's AVI
# muxer holds up to a megabyte, which a kill -9 loses); the others through FFmpeg
VIDEO_BACKENDS = {".avi": cv2.CAP_OPENCV_MJPEG}
# containers whose index is written only on close: unplayable if the process is killed
UNSAFE_WHEN_CUT = (".mp4",)
DEFAULT_SEGMENT_SECONDS = 60.0  # .mp4 segments when the user set none
EVENTS_SUFFIX = ".jsonl"


FSYNC_SECONDS = 1.0


def recover_partials(path: Path, log: Log | None = None) -> list[Path]:
    """Hidden temporaries an older adedge left beside ``path`` when it was killed: each
    non-empty one is renamed ``<stem>.recovered-<time><suffix>`` (it is that run's only
    copy), empty ones are removed; every action is logged."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"[A-Za-z0-9_]{8}\.partial")
    recovered = []
    for stale in sorted(path.parent.glob(f".{glob_escape(path.name)}.*")):
        if not pattern.match(stale.name) or not stale.is_file():
            continue
        info = stale.stat()
        if info.st_size == 0:
            stale.unlink(missing_ok=True)
            if log:
                log(f"removed an empty temporary file of an interrupted run: {stale}")
            continue
        stamp = datetime.fromtimestamp(info.st_mtime).strftime("%Y%m%d-%H%M%S")
        target = path.with_name(f"{path.stem}.recovered-{stamp}{path.suffix}")
        count = 1
        while target.exists():
            count += 1
            target = path.with_name(f"{path.stem}.recovered-{stamp}-{count}{path.suffix}")
        os.replace(stale, target)
        recovered.append(target)
        if log:
            log(f"an interrupted run left {stale.name} ({info.st_size} bytes): kept as {target}")
    return recovered


def _ends_mid_line(path: Path) -> bool:
    """Whether a non-empty file's last byte is not a newline."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except FileNotFoundError:
        return False


class JsonlSink:
    """Append-only JSON lines: one ``frame`` record per scored frame and one per event.

    ``path`` ``-`` writes to standard output. ``existing`` says what to do with a file that
    already holds records (refuse, overwrite, append); it is checked here, before the
    stream starts, and the file itself is opened by the first record.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        threshold: float | None = None,
        existing: Existing = Existing.REFUSE,
        *,
        option: str = "--jsonl",
        fsync_seconds: float = FSYNC_SECONDS,
        log: Log | None = None,
    ) -> None:
        self.to_stdout = str(path) == STDOUT
        self.path = Path(path)
        if not self.to_stdout:
            check_record_target(self.path, option, existing)
            recover_partials(self.path, log)
        self.threshold = threshold
        self.existing = existing
        self.fsync_seconds = fsync_seconds
        self.lines = 0
        self.closed = False
        self._file: TextIO | None = None
        self._lock = threading.Lock()  # the fsync timer and the writer share the file
        self._synced = 0.0
        self._timer: threading.Timer | None = None

    def write(self, frame: Frame, result: FrameScore) -> None:
        self._append(frame_record(frame, result, self.threshold))

    def event(self, event: StreamEvent) -> None:
        self._append(event.record())

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, allow_nan=False) + "\n"
        with self._lock:
            if self.closed:
                raise AdedgeError(f"events file '{self.path}' is already closed")
            file = self._file or self._open()
            file.write(line)  # one call: an interrupt never splits a line
            file.flush()
            self.lines += 1
            self._sync_soon()

    def _open(self) -> TextIO:
        if self.to_stdout:
            self._file = sys.stdout
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            mode = "a" if self.existing is Existing.APPEND else "w"
            cut = mode == "a" and _ends_mid_line(self.path)
            self._file = open(self.path, mode, encoding="utf-8")  # noqa: SIM115
            if cut:  # a power cut ended the earlier run mid-line: start on a line of our own
                self._file.write("\n")
        return self._file

    def _sync_soon(self) -> None:
        """fsync now if the last one is ``fsync_seconds`` old, else once that much time has
        passed (a timer), so a quiet stream's last records reach the disk too."""
        if self.to_stdout or self._file is None:
            return
        now = time.monotonic()
        if now - self._synced >= self.fsync_seconds:
            self._sync()
        elif self._timer is None:
            self._timer = threading.Timer(self.fsync_seconds, self._timed_sync)
            self._timer.daemon = True
            self._timer.start()

    def _sync(self) -> None:
        if self._file is not None and not self.to_stdout:
            os.fsync(self._file.fileno())
        self._synced = time.monotonic()

    def _timed_sync(self) -> None:
        with self._lock:
            self._timer = None
            if not self.closed:
                self._sync()

    def close(self) -> None:
        """Flush, fsync and close; safe to call twice."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            file, self._file = self._file, None
            if file is None or self.to_stdout:
                return
            try:
                file.flush()
                os.fsync(file.fileno())
            finally:
                file.close()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def video_codec(path: Path) -> str:
    """The codec of the video ``path`` names (by its suffix), or a one-line error naming it."""
    codec = VIDEO_CODECS.get(path.suffix.lower())
    if codec is None:
        raise AdedgeError(
            f"cannot write video '{path}': '{path.suffix or '(no suffix)'}' is not a video "
            "type adedge writes",
            f"use one of {', '.join(f'{s} ({c})' for s, c in VIDEO_CODECS.items())}",
        )
    return codec


def open_video_writer(path: Path, fourcc: str, fps: float, size: tuple[int, int]):
    """An OpenCV writer for ``path`` through the backend its suffix writes best with."""
    code = cv2.VideoWriter_fourcc(*fourcc)
    backend = VIDEO_BACKENDS.get(path.suffix.lower())
    if backend is None:
        return cv2.VideoWriter(str(path), code, fps, size)
    return cv2.VideoWriter(str(path), backend, code, fps, size)


def segment_path(path: Path, number: int) -> Path:
    """The ``number``-th segment of video ``path``: ``out-000.mp4``."""
    return path.with_name(f"{path.stem}-{number:03d}{path.suffix}")


def existing_segments(path: Path) -> list[Path]:
    pattern = re.compile(re.escape(path.stem) + r"-\d{3,}" + re.escape(path.suffix) + "$")
    candidates = path.parent.glob(f"{glob_escape(path.stem)}-*{glob_escape(path.suffix)}")
    return sorted(p for p in candidates if pattern.match(p.name))


class VideoSink:
    """Annotated video: score, threshold and label on a bar, red/green border by label, and
    a heatmap with its colour bar where the model gives an anomaly map (``amap``).

    The codec follows the suffix (.avi MJPG, .mp4 mp4v, .mkv FFV1 lossless). The size is
    fixed by the first frame (enlarged to at least ``MIN_VIDEO_SIDE``); later frames of
    another size are resized to it. The file is written under its real name from the first
    frame; with no frame written, nothing is created. ``segment_seconds`` (of video time)
    splits it into ``<stem>-NNN<suffix>`` segments; .mp4 is always split (60 s unless set),
    as an .mp4 cut by a crash does not play.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float = 25.0,
        threshold: float | None = None,
        existing: Existing = Existing.REFUSE,
        *,
        segment_seconds: float | None = None,
        option: str = "--save-video",
        log: Log | None = None,
    ) -> None:
        self.path = Path(path)
        self.option = option
        suffix = self.path.suffix.lower()
        self.fourcc = video_codec(self.path)
        if not (fps > 0 and math.isfinite(fps)):
            raise AdedgeError(f"video fps must be positive (got {fps})", "pass e.g. 25")
        if segment_seconds is not None and not (segment_seconds > 0):
            raise AdedgeError(
                f"video segments must last more than 0 s (got {segment_seconds})",
                "pass e.g. --segment-minutes 10",
            )
        if segment_seconds is None and suffix in UNSAFE_WHEN_CUT:
            segment_seconds = DEFAULT_SEGMENT_SECONDS
            if log:
                log(
                    f"{self.path}: an {suffix} cut by a crash does not play, so it is written "
                    f"in {segment_seconds:g} s segments {segment_path(self.path, 0).name}, "
                    f"{segment_path(self.path, 1).name}, ... (use .mkv or .avi for one file)"
                )
        self.segment_frames = (
            None if segment_seconds is None else max(1, round(segment_seconds * fps))
        )
        self.existing = existing
        check_record_target(self.path, option, existing, can_append=False)
        if self.segment_frames is not None:
            old = existing_segments(self.path)
            if old and existing is not Existing.OVERWRITE:
                raise AdedgeError(
                    f"{option} '{self.path}': segments of an earlier run exist ({old[0].name}"
                    f"{', ...' if len(old) > 1 else ''})",
                    "pass --overwrite to replace them, or choose another name",
                )
        self.fps = float(fps)
        self.threshold = threshold
        self.heat = HeatmapScale()
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0
        self.written: list[Path] = []  # files this sink created, in order
        self.closed = False
        self._probe_codec()  # fail now, not after the first frame, if the codec is missing

    def _probe_codec(self) -> None:
        with tempfile.TemporaryDirectory(prefix="adedge-codec-") as folder:
            probe = Path(folder) / f"probe{self.path.suffix}"
            writer = open_video_writer(probe, self.fourcc, 25.0, (64, 64))
            opened = writer.isOpened()
            writer.release()
        if not opened:
            raise AdedgeError(
                f"OpenCV cannot write video '{self.path}' with codec {self.fourcc}",
                "use .avi (MJPG), which every OpenCV build writes",
            )

    def _target(self) -> Path:
        if self.segment_frames is None:
            return self.path
        return segment_path(self.path, len(self.written))

    def _open_writer(self, size: tuple[int, int]) -> None:
        if not self.written and self.existing is Existing.OVERWRITE:
            for old in existing_segments(self.path) if self.segment_frames else ():
                old.unlink(missing_ok=True)
        target = self._target()
        target.parent.mkdir(parents=True, exist_ok=True)
        writer = open_video_writer(target, self.fourcc, self.fps, size)
        if not writer.isOpened():
            writer.release()
            raise AdedgeError(
                f"OpenCV cannot write video '{target}' with codec {self.fourcc}",
                "use .avi (MJPG), which every OpenCV build writes",
            )
        self._writer, self._size = writer, size
        self.written.append(target)

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()
        self._writer = None

    def write(self, frame: Frame, result: FrameScore) -> None:
        if self.closed:
            raise AdedgeError(f"video '{self.path}' is already closed")
        image = annotate(frame.image, frame.index, result, self.threshold, self.heat)
        size = self._size or (image.shape[1], image.shape[0])
        if (image.shape[1], image.shape[0]) != size:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        segment_full = self.segment_frames and self.frames % self.segment_frames == 0
        if self._writer is not None and segment_full:
            self._release()  # the segment is complete and playable
        if self._writer is None:
            self._open_writer(size)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        """Finish the file; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._release()

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
