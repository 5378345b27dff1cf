"""Sinks: where scored frames go (JSONL events, annotated video, a window, the console).

``open_sinks`` turns ``--sink`` URIs (jetson-inference ``videoOutput`` style) into sinks:
``file://out.mp4`` / ``out.avi`` / ``out.mkv`` (annotated video), ``out.jsonl`` /
``jsonl://out.jsonl`` (one event per frame) and ``display://0`` (an OpenCV window; a clear
error where there is no screen, ``--headless`` leaves it out).

File sinks write under a temporary name in the target folder and rename it into place on
``close()``, which the stream calls in ``finally`` (end of source, error, Ctrl-C, SIGTERM).
A file at the target path is therefore replaced whole or not at all, never half-overwritten
(DESIGN §7). The JSONL sink flushes every line, so even a killed process leaves whole lines
in the temporary file.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

from adedge.atomic import temporary_sibling
from adedge.errors import AdedgeError
from adedge.metrics import auroc
from adedge.runtime.detector import FrameScore
from adedge.runtime.sources import Frame, FrameSource, file_uri_path

VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "FFV1"}
EVENTS_SUFFIX = ".jsonl"
SINK_SCHEMES = ("file", "jsonl", "display")
RED, GREEN, WHITE, DARK = (0, 0, 255), (0, 200, 0), (255, 255, 255), (32, 32, 32)
MIN_VIDEO_SIDE = 192  # smaller frames are enlarged so the annotation stays legible
HEATMAP_ALPHA = 0.45  # weight of the heatmap over the frame
HEATMAP_COLOURS = cv2.COLORMAP_JET


@runtime_checkable
class Sink(Protocol):
    """Receives every scored frame in order; ``close`` is always called once at the end.

    A sink with a ``threshold`` attribute left at None gets the detector's threshold from
    :func:`adedge.runtime.stream.run_stream` before the first frame.
    """

    def write(self, frame: Frame, result: FrameScore) -> None: ...

    def close(self) -> None: ...


def _finite(value: float) -> float | None:
    """JSON has no NaN/Infinity: a broken score becomes null rather than an invalid line."""
    return value if math.isfinite(value) else None


def event_record(frame: Frame, result: FrameScore, threshold: float | None) -> dict[str, Any]:
    """The JSON object written for one frame (the event schema of ``--events``)."""
    record: dict[str, Any] = {
        "frame": frame.index,
        "timestamp": round(frame.timestamp, 6),
        "name": frame.name,
        "score": _finite(float(result.score)),
        "anomalous": bool(result.anomalous),
        "threshold": threshold,
        "latency_ms": {k: round(float(v), 4) for k, v in result.latency_ms.items()},
    }
    alarm = result.alarm  # set by the stream's AlarmFilter
    if alarm is not None:
        record["alarm"] = bool(alarm)
    if frame.truth is not None:
        record["truth"] = bool(frame.truth)
    return record


def _check_target(path: Path, what: str) -> None:
    if path.is_dir():
        raise AdedgeError(f"{what} path '{path}' is a folder", "pass a file name")
    path.parent.mkdir(parents=True, exist_ok=True)


class JsonlSink:
    """One JSON line per frame, flushed each line; the file appears at ``path`` on close."""

    def __init__(self, path: str | os.PathLike[str], threshold: float | None = None) -> None:
        self.path = Path(path)
        _check_target(self.path, "events")
        self.threshold = threshold
        self.temp_path = temporary_sibling(self.path)
        self._file: TextIO | None = open(self.temp_path, "w", encoding="utf-8")  # noqa: SIM115
        self.lines = 0

    def write(self, frame: Frame, result: FrameScore) -> None:
        if self._file is None:
            raise AdedgeError(f"events file '{self.path}' is already closed")
        line = json.dumps(event_record(frame, result, self.threshold), allow_nan=False)
        self._file.write(line + "\n")  # one call: an interrupt never splits a line
        self._file.flush()
        self.lines += 1

    def close(self) -> None:
        """Flush and rename into place; safe to call twice."""
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            file.flush()
            os.fsync(file.fileno())
        finally:
            file.close()
            os.replace(self.temp_path, self.path)

    def discard(self) -> None:
        """Delete the temporary file and leave ``path`` as it was: for a stream that
        never started (e.g. another sink could not open), an old file must survive."""
        if self._file is None:
            return
        file, self._file = self._file, None
        file.close()
        self.temp_path.unlink(missing_ok=True)

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class VideoSink:
    """Annotated video: score, threshold and label on a bar, red/green border by label, and
    a heatmap with its colour bar where the model gives an anomaly map (``amap``).

    The codec follows the suffix (.avi MJPG, .mp4 mp4v, .mkv FFV1 lossless). The size is
    fixed by the first frame (enlarged to at least ``MIN_VIDEO_SIDE``); later frames of
    another size are resized to it. With no frame written, nothing is created at ``path``.
    """

    def __init__(
        self, path: str | os.PathLike[str], fps: float = 25.0, threshold: float | None = None
    ) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise AdedgeError(
                f"video output '{self.path}' has an unsupported suffix '{suffix}'",
                f"use one of {', '.join(VIDEO_CODECS)} (MJPG, mp4v, FFV1)",
            )
        if not fps > 0:
            raise AdedgeError(f"video fps must be positive (got {fps})", "pass e.g. 25")
        _check_target(self.path, "video")
        self.fps = float(fps)
        self.threshold = threshold
        self.fourcc = VIDEO_CODECS[suffix]
        self.temp_path = temporary_sibling(self.path)
        self.heat = HeatmapScale()
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0
        self.closed = False
        self._open_writer((64, 64))  # fail now, not after the first frame, if the codec is missing
        self._release()

    def _open_writer(self, size: tuple[int, int]) -> None:
        fourcc = cv2.VideoWriter_fourcc(*self.fourcc)
        writer = cv2.VideoWriter(str(self.temp_path), fourcc, self.fps, size)
        if not writer.isOpened():
            writer.release()
            self.temp_path.unlink(missing_ok=True)
            raise AdedgeError(
                f"OpenCV cannot write video '{self.path}' with codec {self.fourcc}",
                "use .avi (MJPG), which every OpenCV build writes",
            )
        self._writer, self._size = writer, size

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()
        self._writer, self._size = None, None

    def write(self, frame: Frame, result: FrameScore) -> None:
        if self.closed:
            raise AdedgeError(f"video '{self.path}' is already closed")
        image = annotate(frame.image, frame.index, result, self.threshold, self.heat)
        if self._writer is None:
            self._open_writer((image.shape[1], image.shape[0]))
        elif (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        """Finish the file and rename it into place; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._release()
        if self.frames:
            os.replace(self.temp_path, self.path)
        else:
            self.temp_path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Drop what was written and leave ``path`` as it was (see JsonlSink.discard)."""
        self.closed = True
        self._release()
        self.temp_path.unlink(missing_ok=True)

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
    """q or Esc in the display window: ends the stream cleanly, exactly like Ctrl-C."""

    reason = "q in the display window"


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
    """One line per frame on stdout: index, score, NORMAL/ANOMALY (+ ALARM), name.

    Prints every ``every``-th frame and every anomaly; ``quiet`` prints anomalies only.
    """

    def __init__(self, every: int = 1, quiet: bool = False, stream: TextIO | None = None) -> None:
        if every < 1:
            raise AdedgeError(f"console every={every} is not positive", "pass 1 or more")
        self.every = every
        self.quiet = quiet
        self.stream = stream
        self.count = 0

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


@dataclass(frozen=True)
class SinkSpec:
    """A parsed ``--sink``: ``kind`` is video, jsonl or display; ``target`` a path or the
    display number; ``uri`` what the user typed (for messages)."""

    kind: str
    target: str
    uri: str


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
        return SinkSpec("display", number, text)
    if scheme not in SINK_SCHEMES:
        raise AdedgeError(f"sink scheme '{scheme}://' in '{text}' is not supported", SINK_HINT)
    path = file_uri_path(text)
    if not path:
        raise AdedgeError(f"sink '{text}' names no file", SINK_HINT)
    return SinkSpec("jsonl", path, text) if scheme == "jsonl" else _path_sink(path, text)


def _path_sink(path: str, uri: str) -> SinkSpec:
    suffix = Path(path).suffix.lower()
    if suffix == EVENTS_SUFFIX:
        return SinkSpec("jsonl", path, uri)
    if suffix in VIDEO_CODECS:
        return SinkSpec("video", path, uri)
    raise AdedgeError(
        f"sink '{uri}' is not a known file type ({suffix or 'no suffix'})",
        f"use {EVENTS_SUFFIX} for events or {', '.join(VIDEO_CODECS)} for annotated video",
    )


def open_sink(spec: SinkSpec, fps: float = 25.0) -> Sink:
    """The sink a SinkSpec names (its threshold is filled in by the stream)."""
    if spec.kind == "jsonl":
        return JsonlSink(spec.target)
    if spec.kind == "video":
        return VideoSink(spec.target, fps=fps)
    return DisplaySink(int(spec.target))


def open_sinks(
    targets: Sequence[str | SinkSpec],
    *,
    fps: float = 25.0,
    headless: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[Sink]:
    """Open every ``--sink`` URI (or ready SinkSpec, as the --jsonl/--save-video shortcuts
    give) in order. All are parsed and the screen is checked before any file is started;
    if one fails to open, those already open are discarded, so an existing file at a target
    path is never replaced by a stream that did not run. ``headless`` leaves out display
    sinks (``log`` says so)."""
    specs = [t if isinstance(t, SinkSpec) else parse_sink(t) for t in targets]
    _check_distinct(specs)
    if headless:
        for spec in specs:
            if spec.kind == "display" and log is not None:
                log(f"--headless: not opening {spec.uri}")
        specs = [spec for spec in specs if spec.kind != "display"]
    if any(spec.kind == "display" for spec in specs):
        require_display(next(s.uri for s in specs if s.kind == "display"))
    opened: list[Sink] = []
    try:
        for spec in specs:
            opened.append(open_sink(spec, fps=fps))
    except BaseException:
        discard_sinks(opened)
        raise
    return opened


def _check_distinct(specs: Sequence[SinkSpec]) -> None:
    """Two sinks writing one file would each rename over the other's result."""
    seen: dict[Path, str] = {}
    for spec in specs:
        if spec.kind == "display":
            continue
        key = Path(spec.target).expanduser().resolve()
        if key in seen:
            raise AdedgeError(
                f"sinks '{seen[key]}' and '{spec.uri}' write the same file", "give each its own"
            )
        seen[key] = spec.uri


def discard_sinks(sinks: Sequence[Sink]) -> None:
    """Undo opened sinks without touching their targets (``discard`` where they have one)."""
    for sink in sinks:
        getattr(sink, "discard", sink.close)()
