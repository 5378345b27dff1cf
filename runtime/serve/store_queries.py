"""Reading and writing the event store's rows: the filters of ``GET /api/events`` as one
:class:`EventQuery`, pages on a keyset of (start time, id) with an opaque cursor, and events
with their reviewer's label (:class:`StoredEvent`).

A keyset rather than an offset: a page asked for while cameras record new events (which
sort first, newest first) neither repeats nor skips an event of the pages already read.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import sqlite3
from dataclasses import dataclass
from enum import Enum
from typing import Any

from adedge.runtime.serve.api_types import EventLabel
from adedge.runtime.serve.event_types import Event, MediaKind

UNLABELLED = "none"  # the label filter for events no one reviewed yet
LABELS = tuple(label.value for label in EventLabel)
EVENT_COLUMNS = "data, start_time, end_time, peak_time, label, labelled_at"


@dataclass(frozen=True)
class StoredEvent:
    """An event as the store holds it, with the reviewer's verdict (never published: it
    lives in columns of its own, beside the event's JSON)."""

    event: Event
    label: EventLabel | None = None
    labelled_at: float | None = None  # Unix seconds


@dataclass(frozen=True)
class EventPage:
    """Events newest first; ``next_cursor`` asks for the page after (None: this was the last)."""

    events: list[StoredEvent]
    next_cursor: str | None


@dataclass(frozen=True)
class EventQuery:
    """Which events, newest first (start time, then id). ``after``/``before`` bound the start
    time (``after <= start < before``: adjacent windows tile without overlap), ``min_score``
    the peak score, ``label`` is one of :data:`LABELS`, :data:`UNLABELLED`, or None (any);
    ``cursor`` continues a page. Raises ValueError for a bad label, limit or cursor."""

    camera: str | None = None
    after: float | None = None
    before: float | None = None
    min_score: float | None = None
    in_progress: bool | None = None
    label: EventLabel | str | None = None
    limit: int = 50
    cursor: str | None = None

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, not {self.limit}")
        if self.label is not None and label_value(self.label) not in (*LABELS, UNLABELLED):
            raise ValueError(f"label {self.label!r} is not one of {', '.join(LABELS)} or none")
        for name in ("after", "before", "min_score"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value}")
        if self.cursor is not None:
            decode_cursor(self.cursor)

    def where(self) -> tuple[str, list[Any]]:
        """The SQL ``WHERE`` clause ('' for none) and its arguments."""
        terms: list[str] = []
        args: list[Any] = []
        if self.camera is not None:
            terms.append("camera = ?")
            args.append(self.camera)
        if self.after is not None:
            terms.append("start_time >= ?")
            args.append(self.after)
        if self.before is not None:
            terms.append("start_time < ?")
            args.append(self.before)
        if self.min_score is not None:
            terms.append("peak_score >= ?")
            args.append(self.min_score)
        if self.in_progress is not None:
            terms.append("end_time IS NULL" if self.in_progress else "end_time IS NOT NULL")
        label = None if self.label is None else label_value(self.label)
        if label == UNLABELLED:
            terms.append("label IS NULL")
        elif label is not None:
            terms.append("label = ?")
            args.append(label)
        if self.cursor is not None:
            start, event_id = decode_cursor(self.cursor)
            terms.append("(start_time < ? OR (start_time = ? AND id < ?))")
            args += [start, start, event_id]
        return ("WHERE " + " AND ".join(terms)) if terms else "", args


def label_value(label: EventLabel | str) -> str:
    return label.value if isinstance(label, Enum) else str(label)


def encode_cursor(start: float, event_id: str) -> str:
    """The page after the event (``start``, ``event_id``): URL-safe text, not to be parsed
    by clients (its form may change)."""
    text = json.dumps([start, event_id], separators=(",", ":"))  # repr: the float is exact
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        start, event_id = json.loads(raw)
        if isinstance(start, (int, float)) and isinstance(event_id, str):
            return float(start), event_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        pass
    raise ValueError("cursor: not one this API gave (pass a page's next_cursor, or leave it out)")


def select_page(db: sqlite3.Connection, query: EventQuery) -> EventPage:
    """One page of ``query`` (one more row is read to know whether another page follows)."""
    clause, args = query.where()
    rows = db.execute(
        f"SELECT id, {EVENT_COLUMNS} FROM events {clause} "
        "ORDER BY start_time DESC, id DESC LIMIT ?",
        (*args, query.limit + 1),
    ).fetchall()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    events = [stored_event(*row[1:]) for row in rows]
    cursor = encode_cursor(rows[-1][2], rows[-1][0]) if more else None
    return EventPage(events, cursor)


def select_events(db: sqlite3.Connection, clause: str, args: tuple[Any, ...]) -> list[StoredEvent]:
    rows = db.execute(f"SELECT {EVENT_COLUMNS} FROM events {clause}", args)
    return [stored_event(*row) for row in rows.fetchall()]


def stored_event(
    data: str,
    start: float,
    end: float | None,
    peak_time: float,
    label: str | None,
    labelled_at: float | None,
) -> StoredEvent:
    """An event from its row: the JSON, with the exact times (the JSON's ISO text keeps
    only milliseconds), and its label (an unknown one, written by a newer adedge, reads as
    none rather than failing the page)."""
    event = Event.from_dict(json.loads(data))
    event.start, event.end, event.peak_time = start, end, peak_time
    verdict = EventLabel(label) if label in LABELS else None
    return StoredEvent(event, verdict, labelled_at if verdict is not None else None)


def media_of(data: str | None) -> tuple[dict[MediaKind, str], bool]:
    """A stored event's media map and pruned flag (none for an event not stored yet)."""
    if data is None:
        return {}, False
    fields = json.loads(data)
    media = {MediaKind(kind): name for kind, name in fields["media"].items()}
    return media, bool(fields.get("media_pruned"))


def write_event(db: sqlite3.Connection, event: Event, next_seq: int, size: int) -> None:
    """Insert or update the event's row; its label columns are left as they are."""
    values = (
        event.camera,
        event.start,
        event.end,
        event.peak_time,
        event.peak_score if math.isfinite(event.peak_score) else None,
        json.dumps(event.to_dict(), allow_nan=False),
        next_seq,
        len(event.media),
        size,
        event.id,
    )
    updated = db.execute(
        "UPDATE events SET camera = ?, start_time = ?, end_time = ?, peak_time = ?, "
        "peak_score = ?, data = ?, next_seq = ?, media_files = ?, media_bytes = ? "
        "WHERE id = ?",
        values,
    )
    if updated.rowcount == 0:
        db.execute(
            "INSERT INTO events (camera, start_time, end_time, peak_time, peak_score, data, "
            "next_seq, media_files, media_bytes, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )


def set_label(
    db: sqlite3.Connection, event_id: str, label: EventLabel | str | None, now: float
) -> bool:
    """Store (or clear, ``None``) the event's label; False when there is no such event.
    Raises ValueError for a label that is not one of :data:`LABELS`."""
    value = None if label is None else label_value(label)
    if value is not None and value not in LABELS:
        raise ValueError(f"label {label!r} is not one of {', '.join(LABELS)}")
    cursor = db.execute(
        "UPDATE events SET label = ?, labelled_at = ? WHERE id = ?",
        (value, None if value is None else now, event_id),
    )
    return cursor.rowcount > 0
