"""The event store: events and the messages that announce them in SQLite (``events.db``),
their evidence in a media folder (``media/``) whose size is capped.

Nothing is lost: :meth:`EventStore.record` writes the event and one outbox row per delivery
channel in one synced transaction *before* anything is published; a channel's sender reads
:meth:`~EventStore.pending` in order and :meth:`~EventStore.ack`\\ s what was delivered, so
messages queue on disk while a broker or webhook is away and survive a ``kill -9``. The
event id is the primary key: the store never holds an event twice.

The store owns an event's ``media`` map: files enter through :meth:`~EventStore.add_media`
(or the event's own map at :meth:`~EventStore.record`) and leave through
:meth:`~EventStore.enforce_cap`, which deletes the oldest events' evidence first and keeps
their rows, marked ``media_pruned``. A running byte total makes the cap cheap to check after
every event; opening the store walks the folder once to rebuild it (see :class:`OpenReport`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adedge.errors import AdedgeError
from adedge.runtime.serve.event_types import EndReason, Event, MediaKind, MessageType, encode
from adedge.runtime.serve.stats import StorageStats
from adedge.runtime.serve.store_db import lock_store, open_database, transaction
from adedge.runtime.serve.store_media import MediaFolder, OpenReport

log = logging.getLogger(__name__)

MQTT_CHANNEL = "mqtt"
_EVENT_COLUMNS = "data, start_time, end_time, peak_time"


@dataclass(frozen=True)
class OutboxItem:
    """A message waiting for one channel; ``id`` increases in delivery order."""

    id: int
    channel: str  # "mqtt" or "webhook:<name>"
    topic: str  # mqtt: the suffix under adedge/<node>/ (e.g. "events"); "" for webhooks
    payload: str  # the JSON text to send
    created: float  # unix time


class EventStore:
    """Events, their outbox and their capped media under ``root``. Thread-safe: one
    connection, every call under one lock."""

    def __init__(
        self, root: Path, channels: Sequence[str], max_bytes: int, min_free_bytes: int = 0
    ) -> None:
        self.root = Path(root).absolute()  # media paths are resolved against it
        self.media_dir = self.root / "media"
        self.channels = tuple(channels)
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channels repeat: {self.channels}")
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        try:
            self.media_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AdedgeError(
                f"cannot create the event store at {self.root} ({exc.strerror})",
                "set storage.path to a folder the service may write",
            ) from None
        self._folder = MediaFolder(self.media_dir)
        self._lock = threading.RLock()
        self._lock_file = lock_store(self.root)
        self._db: sqlite3.Connection | None = None
        try:
            self._db = open_database(self.root / "events.db")
            self._media_bytes = 0
            self.opened = self._repair()
        except BaseException:
            self.close()
            raise

    # --- events and their messages -----------------------------------------------------

    def record(self, event: Event, kind: MessageType, topic: str = "events") -> dict[str, Any]:
        """Store ``event`` (insert or update) and queue its message ``kind`` for every
        channel, in one transaction; returns the message (with the event's next ``seq``).
        The event's ``media`` map becomes the store's: files already stored win, new files
        of ``event.media`` that exist are added, gone ones (pruned) are dropped."""
        with self._lock:
            row = self._conn.execute(
                "SELECT next_seq, data, media_bytes FROM events WHERE id = ?", (event.id,)
            ).fetchone()
            seq, stored, size = (0, None, 0) if row is None else (row[0], row[1], row[2])
            media, pruned = _media(stored)
            held = len(media)
            for media_kind, name in event.media.items():
                file = self._folder.inside(name)  # ValueError outside the media folder
                if media_kind not in media and file.is_file():
                    media[media_kind] = self._folder.relative(file)
            if len(media) > held:
                size = self._folder.measure(media.values())
            event.media, event.media_pruned = media, event.media_pruned or pruned
            message = event.message(kind, seq)
            payload, created = encode(message), time.time()
            with transaction(self._conn):
                self._write_event(event, seq + 1, size)
                self._conn.executemany(
                    "INSERT INTO outbox (channel, topic, payload, created) VALUES (?, ?, ?, ?)",
                    [(c, self._topic(c, topic), payload, created) for c in self.channels],
                )
            self._media_bytes += size - (0 if row is None else row[2])
        return message

    def close_interrupted(self, now: float) -> list[Event]:
        """At start: end every event still open (its process died) at ``now`` as
        ``interrupted`` and queue its ``end`` message."""
        with self._lock:
            closed = self._select("WHERE end_time IS NULL ORDER BY start_time, id", ())
            for event in closed:
                event.end = max(now, event.start)
                event.end_reason = EndReason.INTERRUPTED
                self.record(event, MessageType.END)
            return closed

    def get(self, event_id: str) -> Event | None:
        found = self._select("WHERE id = ?", (event_id,))
        return found[0] if found else None

    def events(
        self,
        camera: str | None = None,
        in_progress: bool | None = None,
        limit: int = 100,
        before: float | None = None,
    ) -> list[Event]:
        """Newest first; ``before`` pages by start time (the oldest start of a page)."""
        where, args = [], []
        if camera is not None:
            where.append("camera = ?")
            args.append(camera)
        if in_progress is not None:
            where.append("end_time IS NULL" if in_progress else "end_time IS NOT NULL")
        if before is not None:
            where.append("start_time < ?")
            args.append(before)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        return self._select(f"{clause} ORDER BY start_time DESC, id DESC LIMIT ?", (*args, limit))

    def count(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    # --- the outbox ----------------------------------------------------------------------

    def enqueue(self, channel: str, topic: str, payload: str) -> int:
        """Queue a message that is not an event's (e.g. a retained state) for one channel."""
        if channel not in self.channels:
            raise ValueError(f"unknown channel {channel!r} (configured: {self.channels})")
        with self._lock, transaction(self._conn):
            cursor = self._conn.execute(
                "INSERT INTO outbox (channel, topic, payload, created) VALUES (?, ?, ?, ?)",
                (channel, topic, payload, time.time()),
            )
            return int(cursor.lastrowid)

    def pending(self, channel: str, limit: int = 100, after: int = 0) -> list[OutboxItem]:
        """The channel's waiting messages with ``id > after``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, channel, topic, payload, created FROM outbox "
                "WHERE channel = ? AND id > ? ORDER BY id LIMIT ?",
                (channel, after, limit),
            ).fetchall()
        return [OutboxItem(*row) for row in rows]

    def ack(self, channel: str, item_id: int) -> None:
        """The message was delivered: it leaves the outbox."""
        with self._lock, transaction(self._conn):
            self._conn.execute(
                "DELETE FROM outbox WHERE channel = ? AND id = ?", (channel, item_id)
            )

    def outbox_depth(self, channel: str | None = None) -> int:
        with self._lock:
            if channel is None:
                return self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            query = "SELECT COUNT(*) FROM outbox WHERE channel = ?"
            return self._conn.execute(query, (channel,)).fetchone()[0]

    # --- media ---------------------------------------------------------------------------

    def media_file(self, camera: str, event_id: str, kind: MediaKind, suffix: str) -> Path:
        """Where an event's evidence goes: ``media/<camera>/<YYYY-MM-DD>/<id>-<kind><suffix>``
        (the UTC day the event started; the folder is created). Write it whole (atomic
        rename), then :meth:`add_media`."""
        return self._folder.file_for(camera, event_id, kind, suffix)

    def add_media(self, event_id: str, kind: MediaKind, path: Path) -> None:
        """Attach a finished evidence file (inside the media folder, else ValueError) to a
        stored event; its bytes count against the cap. A file it replaces is deleted."""
        file = self._folder.inside(path)
        file.stat()  # FileNotFoundError for a file that was never written
        with self._lock:
            row = self._conn.execute(
                "SELECT data, media_bytes FROM events WHERE id = ?", (event_id,)
            ).fetchone()
            if row is None:
                raise KeyError(f"no event {event_id!r} in the store")
            data = json.loads(row[0])
            old = data["media"].get(MediaKind(kind).value)
            data["media"][MediaKind(kind).value] = self._folder.relative(file)
            size = self._folder.measure(data["media"].values())
            with transaction(self._conn):
                self._conn.execute(
                    "UPDATE events SET data = ?, media_files = ?, media_bytes = ? WHERE id = ?",
                    (json.dumps(data), len(data["media"]), size, event_id),
                )
            self._media_bytes += size - row[1]
            replaced = None if old is None else self._folder.file_of(old)
            if replaced is not None and replaced != file:
                replaced.unlink(missing_ok=True)

    def media_path(self, event_id: str, kind: MediaKind) -> Path | None:
        """The absolute path of an event's evidence file, or None (no such event, kind or
        file, or a stored path that would leave the media folder)."""
        event = self.get(event_id)
        name = None if event is None else event.media.get(MediaKind(kind))
        file = None if name is None else self._folder.file_of(name)
        return file if file is not None and file.is_file() else None

    def media_bytes(self) -> int:
        return self._media_bytes

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def enforce_cap(self) -> list[str]:
        """Delete the evidence of the oldest events that have some until the media fit in
        ``max_bytes`` and the disk keeps ``min_free_bytes`` free; their rows stay, marked
        ``media_pruned``. Returns the pruned event ids, oldest first."""
        pruned: list[str] = []
        with self._lock:
            while self._media_bytes > self.max_bytes or (
                self.min_free_bytes > 0 and self.free_bytes() < self.min_free_bytes
            ):
                row = self._conn.execute(
                    "SELECT id, data, media_bytes FROM events WHERE media_files > 0 "
                    "ORDER BY start_time, id LIMIT 1"
                ).fetchone()
                if row is None:
                    break  # nothing left to prune: the disk is full of something else
                event_id, text, size = row
                data = json.loads(text)
                files = [self._folder.file_of(name) for name in data["media"].values()]
                data["media"], data["media_pruned"] = {}, True
                with transaction(self._conn):
                    self._conn.execute(
                        "UPDATE events SET data = ?, media_files = 0, media_bytes = 0 WHERE id = ?",
                        (json.dumps(data), event_id),
                    )
                self._media_bytes -= size
                for file in files:
                    if file is not None:
                        file.unlink(missing_ok=True)
                pruned.append(event_id)
        return pruned

    def storage_stats(self) -> StorageStats:
        with self._lock:
            rows = self._conn.execute("SELECT channel, COUNT(*) FROM outbox GROUP BY channel")
            waiting = dict(rows.fetchall())
            return StorageStats(
                path=str(self.root),
                media_bytes=self._media_bytes,
                max_bytes=self.max_bytes,
                free_bytes=self.free_bytes(),
                events=self.count(),
                outbox={channel: waiting.get(channel, 0) for channel in self.channels},
            )

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if not self._lock_file.closed:
                self._lock_file.close()  # releases the flock

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- inside ----------------------------------------------------------------------------

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"the event store at {self.root} is closed")
        return self._db

    def _select(self, clause: str, args: tuple[Any, ...]) -> list[Event]:
        with self._lock:
            rows = self._conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events {clause}", args)
            return [_event(*row) for row in rows.fetchall()]

    def _write_event(self, event: Event, next_seq: int, size: int) -> None:
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
        updated = self._conn.execute(
            "UPDATE events SET camera = ?, start_time = ?, end_time = ?, peak_time = ?, "
            "peak_score = ?, data = ?, next_seq = ?, media_files = ?, media_bytes = ? "
            "WHERE id = ?",
            values,
        )
        if updated.rowcount == 0:
            self._conn.execute(
                "INSERT INTO events (camera, start_time, end_time, peak_time, peak_score, data, "
                "next_seq, media_files, media_bytes, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )

    def _topic(self, channel: str, topic: str) -> str:
        return topic if channel == MQTT_CHANNEL else ""

    def _repair(self) -> OpenReport:
        report = OpenReport()
        with self._lock:
            self._media_bytes = self._folder.repair(self._conn, report)
            known = ",".join("?" * len(self.channels)) or "''"
            query = f"SELECT channel, COUNT(*) FROM outbox WHERE channel NOT IN ({known}) "
            report.outbox_dropped = dict(
                self._conn.execute(query + "GROUP BY channel", self.channels).fetchall()
            )
            if report.outbox_dropped:
                with transaction(self._conn):
                    self._conn.execute(
                        f"DELETE FROM outbox WHERE channel NOT IN ({known})", self.channels
                    )
        if report.repaired_media:
            log.warning("event store %s: media repaired at open: %s", self.root, report)
        if report.outbox_dropped:
            log.warning("event store %s: dropped the outbox of channels no longer configured: %s",
                        self.root, report.outbox_dropped)  # fmt: skip
        return report


def _event(data: str, start: float, end: float | None, peak_time: float) -> Event:
    """An event from its row: the JSON, with the exact times (the JSON's ISO text keeps
    only milliseconds)."""
    event = Event.from_dict(json.loads(data))
    event.start, event.end, event.peak_time = start, end, peak_time
    return event


def _media(data: str | None) -> tuple[dict[MediaKind, str], bool]:
    """A stored event's media map and pruned flag (none for an event not stored yet)."""
    if data is None:
        return {}, False
    fields = json.loads(data)
    media = {MediaKind(kind): name for kind, name in fields["media"].items()}
    return media, bool(fields.get("media_pruned"))
