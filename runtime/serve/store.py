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

Review (the console): a reviewer's label per event (:meth:`~EventStore.set_label`, kept
beside the event's JSON so a later message of the camera never overwrites it and no channel
publishes it), :meth:`~EventStore.delete` of an ended event, and :meth:`~EventStore.query` /
:meth:`~EventStore.iterate` over the filters of ``GET /api/events`` (``store_queries``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adedge.errors import AdedgeError
from adedge.runtime.serve.api_types import EventLabel
from adedge.runtime.serve.event_types import EndReason, Event, MediaKind, MessageType, encode
from adedge.runtime.serve.stats import StorageStats
from adedge.runtime.serve.store_db import lock_store, open_database, transaction
from adedge.runtime.serve.store_media import MediaFolder, OpenReport
from adedge.runtime.serve.store_queries import (
    EventPage,
    EventQuery,
    StoredEvent,
    media_of,
    select_events,
    select_page,
    set_label,
    write_event,
)

log = logging.getLogger(__name__)

MQTT_CHANNEL = "mqtt"
EXPORT_PAGE = 200  # rows read per lock hold while iterating (an export never loads all)


class EventInProgress(AdedgeError):
    """The event is still open: the camera writes it (the API answers 409)."""


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
            media, pruned = media_of(stored)
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
                write_event(self._conn, event, seq + 1, size)
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
            found = self._select("WHERE end_time IS NULL ORDER BY start_time, id", ())
            closed = [stored.event for stored in found]
            for event in closed:
                event.end = max(now, event.start)
                event.end_reason = EndReason.INTERRUPTED
                self.record(event, MessageType.END)
            return closed

    def get(self, event_id: str) -> Event | None:
        found = self.get_stored(event_id)
        return None if found is None else found.event

    def get_stored(self, event_id: str) -> StoredEvent | None:
        """The event with its label, or None."""
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
        if limit < 1:
            return []
        query = EventQuery(camera=camera, in_progress=in_progress, before=before, limit=limit)
        return [stored.event for stored in self.query(query).events]

    def query(self, query: EventQuery) -> EventPage:
        """One page of events that match ``query``, newest first (see :class:`EventQuery`)."""
        with self._lock:
            return select_page(self._conn, query)

    def iterate(self, query: EventQuery, page_size: int = EXPORT_PAGE) -> Iterator[StoredEvent]:
        """Every event that matches ``query`` (from its cursor on; its limit is ignored),
        newest first, read a page at a time: the lock is not held between pages, so an
        export never stalls the cameras. Events started after the first page was read may
        be left out; none is repeated or skipped among the rest."""
        cursor = query.cursor
        while True:
            page = self.query(dataclasses.replace(query, limit=page_size, cursor=cursor))
            yield from page.events
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def set_label(
        self, event_id: str, label: EventLabel | str | None, now: float | None = None
    ) -> StoredEvent | None:
        """Store a reviewer's ``label`` (None clears it) with the time it was given; None
        when there is no such event. The label is review metadata: no message is queued."""
        with self._lock:
            with transaction(self._conn):
                found = set_label(self._conn, event_id, label, time.time() if now is None else now)
            return self.get_stored(event_id) if found else None

    def delete(self, event_id: str) -> bool:
        """Remove an ended event: its row and its evidence files (the media total drops by
        their bytes). Its messages already in the outbox stay: they were promised to the
        channels. False when there is no such event; :class:`EventInProgress` while it is
        open (its camera still writes it)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT data, end_time, media_bytes FROM events WHERE id = ?", (event_id,)
            ).fetchone()
            if row is None:
                return False
            if row[1] is None:
                raise EventInProgress(
                    f"event {event_id} is still in progress", "delete it once it has ended"
                )
            media, _ = media_of(row[0])
            with transaction(self._conn):
                self._conn.execute("DELETE FROM events WHERE id = ?", (event_id,))
            self._media_bytes -= row[2]
            for name in media.values():
                self._folder.discard(name)
        return True

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
        ``media_pruned``. Reviewed (labelled) events go after every unlabelled one: their
        raw frames are what a retraining wants. Returns the pruned event ids in order."""
        pruned: list[str] = []
        with self._lock:
            while self._media_bytes > self.max_bytes or (
                self.min_free_bytes > 0 and self.free_bytes() < self.min_free_bytes
            ):
                row = self._conn.execute(
                    "SELECT id, data, media_bytes FROM events WHERE media_files > 0 "
                    "ORDER BY label IS NOT NULL, start_time, id LIMIT 1"
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

    def _select(self, clause: str, args: tuple[Any, ...]) -> list[StoredEvent]:
        with self._lock:
            return select_events(self._conn, clause, args)

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
