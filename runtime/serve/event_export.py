"""Exports of reviewed events (``GET /api/events/export``): one CSV row per event, and a
zip that sorts the evidence by the reviewer's label for retraining.

The zip holds ``events.csv``, each event's snapshot as ``<label>/<id>.jpg`` and its raw peak
frame as ``<label>/frames/<id>.jpg`` (``unlabelled/`` for events no one reviewed): the raw
frames under ``false_positive/frames/`` are exactly the normal images a retraining wants.
Both read the store a page at a time and write to a file, so a large export is never
held in memory whole.
"""

from __future__ import annotations

import csv
import io
import math
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from adedge.runtime.records import iso_time
from adedge.runtime.serve.event_types import MediaKind
from adedge.runtime.serve.store_queries import StoredEvent

CSV_COLUMNS = (
    "id",
    "camera",
    "start",
    "end",
    "peak_score",
    "threshold",
    "label",
    "model",
    "sha256",
    "box",
    "media",
)
UNLABELLED_FOLDER = "unlabelled"
CSV_NAME = "events.csv"
SPOOL_BYTES = 1024**2  # the CSV inside a zip stays in memory up to this, then goes to disk
_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")

MediaPath = Callable[[str, MediaKind], "Path | None"]  # EventStore.media_path


@dataclass
class ZipCounts:
    """What an export zip holds."""

    events: int = 0
    snapshots: int = 0
    frames: int = 0


def csv_row(stored: StoredEvent) -> list[str]:
    """One event as CSV cells: ISO times in UTC, ``box`` as ``x y width height``, ``media``
    as the kinds of evidence it still has (``snapshot;frame;heatmap;clip``)."""
    event = stored.event
    box = event.box
    return [
        event.id,
        event.camera,
        iso_time(event.start),
        "" if event.end is None else iso_time(event.end),
        _number(event.peak_score),
        _number(event.threshold),
        "" if stored.label is None else stored.label.value,
        event.model.name,
        event.model.sha256,
        "" if box is None else f"{box.x} {box.y} {box.width} {box.height}",
        ";".join(kind.value for kind in MediaKind if kind in event.media),
    ]


def csv_lines(events: Iterable[StoredEvent]) -> Iterator[str]:
    """The CSV text, a header then one line per event (for a streamed response)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in _rows(events):
        writer.writerow(row)
        if buffer.tell() >= 64 * 1024:  # a chunk at a time, not a line: fewer tiny writes
            yield _drain(buffer)
    yield _drain(buffer)


def write_zip(events: Iterable[StoredEvent], media_path: MediaPath, target: IO[bytes]) -> ZipCounts:
    """The export zip into ``target`` (a seekable binary file), in one pass over
    ``events``: evidence pruned or deleted meanwhile is left out, the event kept in the CSV."""
    counts = ZipCounts()
    with (
        zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive,
        tempfile.SpooledTemporaryFile(SPOOL_BYTES, "w+", newline="", encoding="utf-8") as table,
    ):
        writer = csv.writer(table, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for stored in events:
            writer.writerow(csv_row(stored))
            counts.events += 1
            folder = UNLABELLED_FOLDER if stored.label is None else stored.label.value
            name = _SAFE.sub("_", stored.event.id)
            for kind, entry in (
                (MediaKind.SNAPSHOT, f"{folder}/{name}"),
                (MediaKind.FRAME, f"{folder}/frames/{name}"),
            ):
                file = media_path(stored.event.id, kind)
                if file is not None and _add_file(archive, file, entry + file.suffix.lower()):
                    counts.snapshots += kind is MediaKind.SNAPSHOT
                    counts.frames += kind is MediaKind.FRAME
        table.seek(0)
        with archive.open(CSV_NAME, "w") as out, io.TextIOWrapper(out, "utf-8", newline="") as text:
            shutil.copyfileobj(table, text)
    return counts


def _add_file(archive: zipfile.ZipFile, file: Path, entry: str) -> bool:
    """Stored as is (JPEG is compressed already); False for a file gone since it was found."""
    try:
        archive.write(file, entry, compress_type=zipfile.ZIP_STORED)
    except FileNotFoundError:
        return False
    return True


def _rows(events: Iterable[StoredEvent]) -> Iterator[list[str]]:
    for stored in events:
        yield csv_row(stored)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _number(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else ""
