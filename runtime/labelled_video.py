"""A labelled video: a data set's test split as a real video file plus its ground-truth CSV
(`adedge video`), and the reader of that CSV (`adedge stream --truth`).

So a stream can be tried, and its per-frame decisions checked, on images whose labels are
known. Frames are upscaled with nearest-neighbour (no new detail) and written losslessly
enough (MJPG at high quality, or FFV1 for .mkv) that the stream sees the same content.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import cv2
import numpy as np

from adedge.atomic import atomic_path, write_text
from adedge.data import DataSet
from adedge.errors import AdedgeError, DataError
from adedge.runtime.sinks.files import VIDEO_CODECS, video_codec

CODECS = VIDEO_CODECS  # the name runtime/render.py re-exports


def video_writer(
    path: Path, fps: float, size: tuple[int, int], shown: Path | None = None
) -> cv2.VideoWriter:
    """An opened writer for ``path``; ``shown`` is the name errors give (the user's path
    when ``path`` is a temporary)."""
    codec = video_codec(shown or path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    if not writer.isOpened():
        raise AdedgeError(
            f"OpenCV cannot write {codec} video to '{shown or path}'", "try .avi or .mkv"
        )
    return writer


def interleave(labels: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """A shuffled pick of test indices with normal and anomalous frames mixed."""
    order = np.random.default_rng(seed).permutation(len(labels))
    return order if limit is None else order[:limit]


def render_test_split(
    dataset: DataSet, out: Path, size: int = 128, fps: float = 10.0, limit: int | None = None
) -> Path:
    test = dataset.test
    if test is None or len(test) == 0:
        raise DataError(f"'{dataset.spec}' has no test split to render", "use anomaly=N")
    picks = interleave(test.labels, limit)
    truth_file = out.with_suffix(".csv")
    rows = []
    with atomic_path(out) as tmp:
        writer = video_writer(tmp, fps, (size, size), shown=out)
        try:
            for frame_index, i in enumerate(picks):
                image = test.images[i]
                frame = cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST)
                if frame.ndim == 2:
                    frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
                else:
                    frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
                writer.write(frame)
                kind = test.kinds[i] if test.kinds else ""
                rows.append((frame_index, int(test.labels[i]), kind, test.names[i]))
        finally:
            writer.release()
    buffer = io.StringIO()
    table = csv.writer(buffer, lineterminator="\n")
    table.writerow(["frame", "anomalous", "kind", "source"])
    table.writerows(rows)
    write_text(truth_file, buffer.getvalue())
    return truth_file


def read_truth(path: Path) -> dict[int, int]:
    """frame index -> 1 (anomalous) / 0 from a CSV with columns frame, anomalous."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return {int(r["frame"]): int(r["anomalous"]) for r in csv.DictReader(handle)}
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise AdedgeError(
            f"cannot read ground truth '{path}' ({type(exc).__name__}: {exc})",
            "pass a CSV with the columns frame,anomalous (as `adedge video` writes)",
        ) from None
