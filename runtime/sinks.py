"""Sinks: where scored frames go (JSONL records, annotated video, a window, the console).

``open_sinks`` turns ``--sink`` URIs (jetson-inference ``videoOutput`` style) into sinks:
``file://out.mp4`` / ``out.avi`` / ``out.mkv`` (annotated video), ``out.jsonl`` /
``jsonl://out.jsonl`` (one record per frame and per event; ``-`` is standard output) and
``display://0`` (an OpenCV window; a clear error where there is no screen, ``--headless``
leaves it out).

Record streams are written under their real names as they are produced (DESIGN §7), so
``tail -f``, Fluent Bit or Filebeat see every record while the stream runs, and a kill -9,
an OOM kill or a power cut loses at most the last second:

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
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

import cv2
import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from adedge.atomic import glob_escape
from adedge.errors import AdedgeError
from adedge.metrics import auroc
from adedge.outputs import STDOUT, Existing, check_record_target
from adedge.runtime.detector import FrameScore
from adedge.runtime.records import StreamEvent, frame_record
from adedge.runtime.sources import Frame, FrameSource, file_uri_path

VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "FFV1"}
# .avi through OpenCV's own MJPEG writer: it writes each frame as it comes (FFmpeg's AVI
# muxer holds up to a megabyte, which a kill -9 loses); the others through FFmpeg
VIDEO_BACKENDS = {".avi": cv2.CAP_OPENCV_MJPEG}
# containers whose index is written only on close: unplayable if the process is killed
UNSAFE_WHEN_CUT = (".mp4",)
DEFAULT_SEGMENT_SECONDS = 60.0  # .mp4 segments when the user set none
EVENTS_SUFFIX = ".jsonl"
SINK_SCHEMES = ("file", "jsonl", "display")
FSYNC_SECONDS = 1.0
RED, GREEN, WHITE, DARK = (0, 0, 255), (0, 200, 0), (255, 255, 255), (32, 32, 32)
MIN_VIDEO_SIDE = 192  # smaller frames are enlarged so the annotation stays legible
HEATMAP_ALPHA = 0.45  # weight of the heatmap over the frame
HEATMAP_COLOURS = cv2.COLORMAP_JET

Log = Callable[[str], None]


@runtime_checkable
class Sink(Protocol):
    """Receives every scored frame in order; ``close`` is always called once at the end.

    A sink with a ``threshold`` attribute left at None gets the detector's threshold from
    :func:`adedge.runtime.stream.run_stream` before the first frame.
    """

    def write(self, frame: Frame, result: FrameScore) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class EventSink(Protocol):
    """A sink that also records the stream's events (:mod:`adedge.runtime.records`), in
    order with its frames."""

    def event(self, event: StreamEvent) -> None: ...


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
        if suffix not in VIDEO_CODECS:
            raise AdedgeError(
                f"video output '{self.path}' has an unsupported suffix '{suffix}'",
                f"use one of {', '.join(VIDEO_CODECS)} (MJPG, mp4v, FFV1)",
            )
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
        self.fourcc = VIDEO_CODECS[suffix]
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


# --- drawing -------------------------------------------------------------------------------


class HeatmapScale:
    """Maps anomaly-map values to colours with the lowest and highest value seen so far in
    the stream, so a colour means the same on every frame (a per-frame min-max would paint
    every normal frame as hot as the worst defect)."""

    def __init__(self) -> None:
        self.low = math.inf
        self.high = -math.inf

    def update(self, amap: np.ndarray) -> tuple[float, float]:
        """Widen the range with ``amap``'s finite values; returns (low, high), low < high."""
        finite = amap[np.isfinite(amap)]
        if finite.size:
            self.low = min(self.low, float(finite.min()))
            self.high = max(self.high, float(finite.max()))
        if not self.low <= self.high:
            return 0.0, 1.0
        return self.low, max(self.high, self.low + 1e-6)


def frame_amap(result: FrameScore) -> np.ndarray | None:
    """The result's anomaly map as a 2-D float32 array, or None where the model gives none.

    Read with getattr: only detectors of pixel-level models set ``FrameScore.amap``.
    """
    amap = result.amap
    if amap is None:
        return None
    amap = np.squeeze(np.asarray(amap, dtype=np.float32))
    return amap if amap.ndim == 2 and amap.size else None


def annotate(
    image: np.ndarray,
    index: int,
    result: FrameScore,
    threshold: float | None,
    heat: HeatmapScale | None = None,
) -> np.ndarray:
    """A BGR copy of the frame with a red (anomaly) or green border and a text bar; with an
    anomaly map, a heatmap overlay and a colour bar (scaled by ``heat``, else the map's own
    range)."""
    canvas = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    canvas = np.ascontiguousarray(canvas[:, :, :3], dtype=np.uint8)
    side = min(canvas.shape[:2])
    if side < MIN_VIDEO_SIDE:
        factor = math.ceil(MIN_VIDEO_SIDE / side)
        canvas = cv2.resize(canvas, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    else:
        canvas = canvas.copy()
    amap = frame_amap(result)
    value_range = None
    if amap is not None:
        value_range = (heat or HeatmapScale()).update(amap)
        canvas = overlay_heatmap(canvas, amap, *value_range)
    height, width = canvas.shape[:2]
    colour = RED if result.anomalous else GREEN
    border = max(3, min(height, width) // 60)
    cv2.rectangle(canvas, (0, 0), (width - 1, height - 1), colour, 2 * border)
    label = "ANOMALY" if result.anomalous else "normal"
    if result.alarm:
        label += " ALARM"
    thr = "" if threshold is None else f" / thr {threshold:.4g}"
    bar_bottom = _text_bar(
        canvas, f"#{index} score {result.score:.4g}{thr} {label}", colour, border
    )
    if value_range is not None:
        _colour_bar(canvas, *value_range, top=bar_bottom + 4, margin=border)
    return canvas


def overlay_heatmap(canvas: np.ndarray, amap: np.ndarray, low: float, high: float) -> np.ndarray:
    """``canvas`` blended with ``amap`` (any size: it is stretched to the canvas) coloured
    from ``low`` (blue) to ``high`` (red)."""
    height, width = canvas.shape[:2]
    unit = (np.nan_to_num(amap, nan=low, posinf=high, neginf=low) - low) / (high - low)
    unit = cv2.resize(np.clip(unit, 0.0, 1.0), (width, height), interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap(np.rint(unit * 255).astype(np.uint8), HEATMAP_COLOURS)
    return cv2.addWeighted(canvas, 1.0 - HEATMAP_ALPHA, colours, HEATMAP_ALPHA, 0.0)


def _colour_bar(canvas: np.ndarray, low: float, high: float, top: int, margin: int) -> None:
    """A vertical colour scale at the right edge, ``high`` at the top, with its values."""
    height, width = canvas.shape[:2]
    bar_w = max(6, width // 40)
    right, bottom = width - 1 - margin - 4, height - 1 - margin - 4
    left, bar_h = right - bar_w, bottom - top
    if bar_h < 16 or left < width // 2:
        return
    ramp = np.linspace(255, 0, bar_h).astype(np.uint8)[:, None]
    strip = cv2.applyColorMap(np.repeat(ramp, bar_w, axis=1), HEATMAP_COLOURS)
    canvas[top:bottom, left:right] = strip
    cv2.rectangle(canvas, (left - 1, top - 1), (right, bottom), WHITE, 1)
    scale = max(0.3, min(0.5, width / 1200))
    for text, y in ((f"{high:.3g}", top + 10), (f"{low:.3g}", bottom - 2)):
        (text_w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        origin = (max(0, left - text_w - 4), y)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, DARK, 3)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, WHITE, 1)


def _text_bar(canvas: np.ndarray, text: str, colour: tuple[int, int, int], top: int) -> int:
    """Draw ``text`` on a dark bar below the top border, scaled to fit the width; returns
    the bar's bottom row."""
    width = canvas.shape[1]
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 1
    scale = 1.0
    (text_w, text_h), base = cv2.getTextSize(text, font, scale, thickness)
    scale = min(1.0, (width - 2 * top - 8) / max(text_w, 1))
    (text_w, text_h), base = cv2.getTextSize(text, font, scale, thickness)
    bar_bottom = top + text_h + base + 8
    cv2.rectangle(canvas, (top, top), (width - 1 - top, bar_bottom), DARK, -1)
    cv2.putText(canvas, text, (top + 4, top + 4 + text_h), font, scale, WHITE, thickness)
    cv2.rectangle(canvas, (top, bar_bottom - 3), (width - 1 - top, bar_bottom), colour, -1)
    return bar_bottom


# --- a window on the screen ----------------------------------------------------------------

HEADLESS_HINT = "run with --headless (or without --sink display://) to stream without a window"


class WindowClosed(KeyboardInterrupt):
    """q or Esc in the display window: ends the stream cleanly, like Ctrl-C, but it is the
    user's way to end it, so the command exits 0."""

    reason = "q in the display window"
    exit_code = 0


def display_problem(build_info: str | None = None) -> str | None:
    """Why no window can open here, or None. Checked before the first frame: OpenCV with
    no screen either fails deep inside ``imshow`` or aborts the whole process."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return "there is no screen (DISPLAY is not set)"
    info = cv2.getBuildInformation() if build_info is None else build_info
    gui = re.search(r"^\s*GUI:\s*(\S+)", info, re.MULTILINE)
    if gui is not None and gui.group(1).upper() == "NONE":
        return "this OpenCV has no GUI support (opencv-python-headless)"
    return None


def require_display(what: str) -> None:
    """A one-line AdedgeError naming why ``what`` cannot be shown and suggesting --headless."""
    problem = display_problem()
    if problem is not None:
        raise AdedgeError(f"cannot open {what}: {problem}", HEADLESS_HINT)


class DisplaySink:
    """Shows every annotated frame in an OpenCV window named after ``display://N``.

    OpenCV cannot pick a monitor: the number only names the window. Pressing q or Esc in
    the window ends the stream like Ctrl-C (sinks closed, summary printed).
    """

    def __init__(self, number: int = 0, threshold: float | None = None) -> None:
        self.uri = f"display://{number}"
        require_display(self.uri)
        self.window = f"adedge {self.uri}"
        self.threshold = threshold
        self.heat = HeatmapScale()
        self.frames = 0
        self.closed = False
        try:
            cv2.namedWindow(self.window, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "OpenCV error"
            raise AdedgeError(f"cannot open {self.uri}: {reason}", HEADLESS_HINT) from None

    def write(self, frame: Frame, result: FrameScore) -> None:
        cv2.imshow(
            self.window, annotate(frame.image, frame.index, result, self.threshold, self.heat)
        )
        self.frames += 1
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            raise WindowClosed()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            cv2.destroyWindow(self.window)
            cv2.waitKey(1)
        except cv2.error:
            pass  # the user closed the window already


# --- the console ---------------------------------------------------------------------------


class ConsoleSink:
    """One line per frame on stdout: index, score, NORMAL/ANOMALY (+ ALARM), name; and one
    line per event (a skipped file, a live source dropping and coming back, each reopen
    attempt, an alarm switching on and off) on stderr, with the wall-clock time.

    Prints every ``every``-th frame and every anomaly; ``quiet`` prints anomalies only
    (events always). ``stream``/``errors`` default to stdout/stderr.
    """

    QUIET_EVENTS = ("start", "end")  # the command prints these itself

    def __init__(
        self,
        every: int = 1,
        quiet: bool = False,
        stream: TextIO | None = None,
        errors: TextIO | None = None,
    ) -> None:
        if every < 1:
            raise AdedgeError(f"console every={every} is not positive", "pass 1 or more")
        self.every = every
        self.quiet = quiet
        self.stream = stream
        self.errors = errors
        self.count = 0

    def event(self, event: StreamEvent) -> None:
        if event.kind in self.QUIET_EVENTS:
            return
        out = self.errors or sys.stderr
        clock = datetime.fromtimestamp(event.wall).strftime("%H:%M:%S")
        out.write(f"{clock} {event.message()}\n")
        out.flush()

    def write(self, frame: Frame, result: FrameScore) -> None:
        self.count += 1
        due = (self.count - 1) % self.every == 0 and not self.quiet
        if not (due or result.anomalous):
            return
        label = "ANOMALY" if result.anomalous else "NORMAL"
        alarm = "  ALARM" if result.alarm else ""
        truth = "" if frame.truth is None else f"  truth={'defect' if frame.truth else 'normal'}"
        line = f"frame {frame.index:>7d}  score {result.score:>10.4f}  {label:<7}  {frame.name}"
        out = self.stream or sys.stdout
        out.write(line + alarm + truth + "\n")  # one call: an interrupt never splits a line
        out.flush()

    def close(self) -> None:
        (self.stream or sys.stdout).flush()


class _RateColumn(ProgressColumn):
    """Frames per second over rich's recent window."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f} fps", style="progress.data.speed")


class ProgressSink:
    """A rich progress line on stderr while files, folders or the synthetic scene stream:
    frames done of those expected, rate, anomalies, time left. Create it only where
    :func:`progress_wanted` says so: a bar in a log file or a CI transcript is noise."""

    def __init__(
        self, total: int | None, description: str = "streaming", console: Console | None = None
    ) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TextColumn("{task.fields[events]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task(description, total=total, events="")
        self.anomalies = 0
        self.alarms = 0
        self._alarm_on = False
        self.started = False

    def write(self, frame: Frame, result: FrameScore) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        alarm = bool(result.alarm)
        self.alarms += alarm and not self._alarm_on
        self._alarm_on = alarm
        self.anomalies += bool(result.anomalous)
        events = f"{self.anomalies} anomalous, {self.alarms} alarms"
        self.progress.update(self.task, advance=1, events=events)

    def close(self) -> None:
        if self.started:
            self.progress.stop()
            self.started = False


def progress_wanted(source: FrameSource, streams: Sequence[TextIO] | None = None) -> bool:
    """A progress line only for sources that end (not cameras), and only when stdout and
    stderr are both a terminal (rich moves stdout lines above the bar) and not under CI."""
    if source.live or os.environ.get("CI"):
        return False
    for stream in (sys.stdout, sys.stderr) if streams is None else streams:
        isatty = getattr(stream, "isatty", None)
        if isatty is None or not isatty():
            return False
    return True


# --- scoring the stream's own decisions ----------------------------------------------------


class DetectionTally:
    """Scores the stream's own decisions on frames whose truth is known (the synthetic
    scene's injected defects, or a ground-truth CSV): AUROC and TPR/TNR at the threshold.

    Kept in typed arrays (17 bytes a frame, not ~100 in lists): an endless synthetic
    stream keeps every score for its AUROC.
    """

    def __init__(self) -> None:
        self.scores = array("d")
        self.truths = array("b")
        self.flags = array("b")

    def write(self, frame: Frame, result: FrameScore) -> None:
        if frame.truth is not None and math.isfinite(result.score):
            self.scores.append(float(result.score))
            self.truths.append(bool(frame.truth))
            self.flags.append(bool(result.anomalous))

    def close(self) -> None:
        pass

    def summary(self) -> dict[str, Any] | None:
        """None until both normal and defective frames were seen."""
        truths = np.asarray(self.truths, dtype=bool)
        if truths.all() or not truths.any():
            return None
        flags = np.asarray(self.flags, dtype=bool)
        return {
            "frames_with_truth": len(truths),
            "defective": int(truths.sum()),
            "auroc": auroc(truths, np.asarray(self.scores)),
            "tpr": float(flags[truths].mean()),
            "tnr": float((~flags[~truths]).mean()),
        }

    def render(self) -> str:
        result = self.summary()
        if result is None:
            return "detection: needs both normal and defective frames with known truth"
        return (
            f"detection on {result['frames_with_truth']} frames with known truth "
            f"({result['defective']} defective): AUROC {result['auroc']:.4f}, "
            f"TPR {result['tpr']:.3f}, TNR {result['tnr']:.3f} at the threshold"
        )


# --- --sink URIs ---------------------------------------------------------------------------

SINK_HINT = "use file://out.mp4|.avi|.mkv (video), out.jsonl or jsonl://out.jsonl, display://0"


class SinkKind(str, Enum):
    JSONL = "jsonl"
    VIDEO = "video"
    DISPLAY = "display"


@dataclass(frozen=True)
class SinkSpec:
    """A parsed ``--sink``: ``kind`` says which sink; ``target`` a path (``-``: stdout, for
    JSONL) or the display number; ``uri`` what the user typed, or the shortcut option
    (``--jsonl``, ``--save-video``) that stands for it (for messages)."""

    kind: SinkKind
    target: str
    uri: str

    @property
    def option(self) -> str:
        return self.uri if self.uri.startswith("--") else f"--sink {self.uri}"


@dataclass(frozen=True)
class SinkSettings:
    """How file sinks open: ``fps`` of video, what to do with an ``existing`` file,
    ``segment_seconds`` of video per file (None: one file; .mp4 is always split), and
    ``log`` for what they report (recovered temporaries, segmenting)."""

    fps: float = 25.0
    existing: Existing = Existing.REFUSE
    segment_seconds: float | None = None
    log: Log | None = None


def parse_sink(uri: str) -> SinkSpec:
    """``--sink`` text -> SinkSpec; a one-line AdedgeError for anything not understood."""
    text = uri.strip()
    if not text:
        raise AdedgeError("a --sink is empty", SINK_HINT)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return _path_sink(text, text)
    scheme = scheme.lower()
    if scheme == "display":
        number = rest.strip("/") or "0"
        if not number.isdigit():
            raise AdedgeError(f"sink '{text}' does not name a display number", "use display://0")
        return SinkSpec(SinkKind.DISPLAY, number, text)
    if scheme not in SINK_SCHEMES:
        raise AdedgeError(f"sink scheme '{scheme}://' in '{text}' is not supported", SINK_HINT)
    path = file_uri_path(text)
    if not path:
        raise AdedgeError(f"sink '{text}' names no file", SINK_HINT)
    return SinkSpec(SinkKind.JSONL, path, text) if scheme == "jsonl" else _path_sink(path, text)


def _path_sink(path: str, uri: str) -> SinkSpec:
    suffix = Path(path).suffix.lower()
    if suffix == EVENTS_SUFFIX or path == STDOUT:
        return SinkSpec(SinkKind.JSONL, path, uri)
    if suffix in VIDEO_CODECS:
        return SinkSpec(SinkKind.VIDEO, path, uri)
    raise AdedgeError(
        f"sink '{uri}' is not a known file type ({suffix or 'no suffix'})",
        f"use {EVENTS_SUFFIX} for events or {', '.join(VIDEO_CODECS)} for annotated video",
    )


def open_sink(spec: SinkSpec, settings: SinkSettings = SinkSettings()) -> Sink:
    """The sink a SinkSpec names (its threshold is filled in by the stream)."""
    if spec.kind is SinkKind.JSONL:
        return JsonlSink(spec.target, None, settings.existing, option=spec.option, log=settings.log)
    if spec.kind is SinkKind.VIDEO:
        return VideoSink(
            spec.target,
            settings.fps,
            None,
            settings.existing,
            segment_seconds=settings.segment_seconds,
            option=spec.option,
            log=settings.log,
        )
    return DisplaySink(int(spec.target))


def parse_sinks(targets: Sequence[str | SinkSpec], *, headless: bool = False) -> list[SinkSpec]:
    """Every ``--sink`` URI (or ready SinkSpec, as the --jsonl/--save-video shortcuts give)
    parsed, checked to name distinct files, without display sinks when ``headless``."""
    specs = [t if isinstance(t, SinkSpec) else parse_sink(t) for t in targets]
    _check_distinct(specs)
    if headless:
        specs = [spec for spec in specs if spec.kind is not SinkKind.DISPLAY]
    return specs


def open_sinks(
    targets: Sequence[str | SinkSpec],
    settings: SinkSettings = SinkSettings(),
    *,
    headless: bool = False,
) -> list[Sink]:
    """Open every sink in order. All are parsed, their files checked and the screen
    checked before any is opened; nothing is written until the stream's first record, so
    a stream that fails to start leaves every existing file as it was. ``headless`` leaves
    out display sinks (``settings.log`` says so)."""
    specs = parse_sinks(targets)
    if headless:
        for spec in specs:
            if spec.kind is SinkKind.DISPLAY and settings.log is not None:
                settings.log(f"--headless: not opening {spec.uri}")
        specs = parse_sinks(specs, headless=True)
    if any(spec.kind is SinkKind.DISPLAY for spec in specs):
        require_display(next(s.uri for s in specs if s.kind is SinkKind.DISPLAY))
    opened: list[Sink] = []
    try:
        for spec in specs:
            opened.append(open_sink(spec, settings))
    except BaseException:
        discard_sinks(opened)
        raise
    return opened


def _check_distinct(specs: Sequence[SinkSpec]) -> None:
    """Two sinks writing one file would each rename over the other's result."""
    seen: dict[Path, str] = {}
    for spec in specs:
        if spec.kind is SinkKind.DISPLAY:
            continue
        key = Path(spec.target).expanduser().resolve()
        if key in seen:
            raise AdedgeError(
                f"sinks '{seen[key]}' and '{spec.uri}' write the same file", "give each its own"
            )
        seen[key] = spec.uri


def discard_sinks(sinks: Sequence[Sink]) -> None:
    """Close sinks that never received a record: they wrote nothing (files are opened by
    their first record), so every existing target is as it was."""
    for sink in sinks:
        sink.close()
