"""Sinks: where scored frames go (JSONL events, annotated video, the console).

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
import sys
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

import cv2
import numpy as np

from adedge.atomic import temporary_sibling
from adedge.errors import AdedgeError
from adedge.metrics import auroc
from adedge.runtime.detector import FrameScore
from adedge.runtime.sources import Frame

VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "FFV1"}
RED, GREEN, WHITE, DARK = (0, 0, 255), (0, 200, 0), (255, 255, 255), (32, 32, 32)
MIN_VIDEO_SIDE = 192  # smaller frames are enlarged so the annotation stays legible


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

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class VideoSink:
    """Annotated video: score, threshold and label on a bar, red/green border by label.

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
        image = annotate(frame.image, frame.index, result, self.threshold)
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

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def annotate(
    image: np.ndarray, index: int, result: FrameScore, threshold: float | None
) -> np.ndarray:
    """A BGR copy of the frame with a red (anomaly) or green border and a text bar."""
    canvas = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    canvas = np.ascontiguousarray(canvas[:, :, :3], dtype=np.uint8)
    side = min(canvas.shape[:2])
    if side < MIN_VIDEO_SIDE:
        factor = math.ceil(MIN_VIDEO_SIDE / side)
        canvas = cv2.resize(canvas, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    else:
        canvas = canvas.copy()
    height, width = canvas.shape[:2]
    colour = RED if result.anomalous else GREEN
    border = max(3, min(height, width) // 60)
    cv2.rectangle(canvas, (0, 0), (width - 1, height - 1), colour, 2 * border)
    label = "ANOMALY" if result.anomalous else "normal"
    thr = "" if threshold is None else f" / thr {threshold:.4g}"
    _text_bar(canvas, f"#{index} score {result.score:.4g}{thr} {label}", colour, border)
    return canvas


def _text_bar(canvas: np.ndarray, text: str, colour: tuple[int, int, int], top: int) -> None:
    """Draw ``text`` on a dark bar below the top border, scaled to fit the width."""
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


class ConsoleSink:
    """One line per frame on stdout: index, score, NORMAL/ANOMALY, name.

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
        truth = "" if frame.truth is None else f"  truth={'defect' if frame.truth else 'normal'}"
        line = f"frame {frame.index:>7d}  score {result.score:>10.4f}  {label:<7}  {frame.name}"
        out = self.stream or sys.stdout
        out.write(line + truth + "\n")  # one call: an interrupt never splits a line
        out.flush()

    def close(self) -> None:
        (self.stream or sys.stdout).flush()


class DetectionTally:
    """Scores the stream's own decisions on frames whose truth is known (the synthetic
    scene's injected defects, or a ground-truth CSV): AUROC and TPR/TNR at the threshold."""

    def __init__(self) -> None:
        self.scores: list[float] = []
        self.truths: list[bool] = []
        self.flags: list[bool] = []

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
