"""Opening the event store's SQLite file: one process at a time, WAL with full sync, a schema
version, and a one-line error (never a traceback) for a file that is not a usable store.

WAL lets readers (the HTTP API) run beside the writer and is the embedded default a Jetson
needs; ``synchronous=FULL`` syncs the WAL at every commit, so a committed event survives a
``kill -9`` and a power cut.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from adedge.errors import AdedgeError

SCHEMA_VERSION = 2  # PRAGMA user_version; a newer file is refused, not guessed at

# Times are Unix seconds (REAL, exact); ``data`` is Event.to_dict()'s JSON. ``media_files``
# and ``media_bytes`` say what of the capped media folder the event holds. ``label`` and
# ``labelled_at`` are a reviewer's verdict (schema 2): columns of their own, never in
# ``data``, so a message the camera records later cannot overwrite them and no channel
# publishes them.
SCHEMA = [
    """CREATE TABLE events (
        id TEXT PRIMARY KEY,
        camera TEXT NOT NULL,
        start_time REAL NOT NULL,
        end_time REAL,
        peak_time REAL NOT NULL,
        peak_score REAL,
        data TEXT NOT NULL,
        next_seq INTEGER NOT NULL DEFAULT 0,
        media_files INTEGER NOT NULL DEFAULT 0,
        media_bytes INTEGER NOT NULL DEFAULT 0,
        label TEXT,
        labelled_at REAL
    )""",
    "CREATE INDEX events_camera_start ON events(camera, start_time)",
    "CREATE INDEX events_start ON events(start_time)",
    "CREATE INDEX events_open ON events(start_time) WHERE end_time IS NULL",
    "CREATE INDEX events_with_media ON events(start_time) WHERE media_files > 0",
    # AUTOINCREMENT: an id is never reused, even after every row was acked
    """CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        topic TEXT NOT NULL,
        payload TEXT NOT NULL,
        created REAL NOT NULL
    )""",
    "CREATE INDEX outbox_channel ON outbox(channel, id)",
    "CREATE INDEX events_label_start ON events(label, start_time)",
]

# How a file of schema N becomes N + 1, in the same transaction as its user_version bump.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        "ALTER TABLE events ADD COLUMN label TEXT",
        "ALTER TABLE events ADD COLUMN labelled_at REAL",
        "CREATE INDEX events_label_start ON events(label, start_time)",
    ],
}
OUR_TABLES = {"events", "outbox"}


def lock_store(root: Path) -> IO[str]:
    """Hold ``root/events.lock`` while the store is open: a second service on the same
    folder would deliver the outbox twice and miscount the media. The kernel drops the lock
    when the process ends, even by ``kill -9``."""
    handle = open(root / "events.lock", "a", encoding="ascii")  # noqa: SIM115 (held open)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise AdedgeError(
            f"another process uses the event store at {root}",
            "stop the other adedge serve, or give this one its own storage.path",
        ) from None
    return handle


def open_database(path: Path) -> sqlite3.Connection:
    """The store's connection (autocommit: transactions are explicit), schema created or
    checked. Raises a one-line :class:`AdedgeError` for a file that cannot serve."""
    try:
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    except sqlite3.Error as exc:
        raise _cannot_open(path, exc) from None
    try:
        _prepare(db, path)
    except sqlite3.OperationalError as exc:  # cannot open/lock/read: not the content's fault
        db.close()
        raise _cannot_open(path, exc) from None
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
        db.close()
        raise corrupt_store(path, str(exc)) from None
    except BaseException:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise AdedgeError(
            f"{path} is an event store of schema {version}, newer than this adedge reads "
            f"({SCHEMA_VERSION})",
            "upgrade adedge, or move the file away to start a new store",
        )
    tables = {
        name
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not name.startswith("sqlite_")
    }
    if version == 0 and tables:
        raise AdedgeError(
            f"{path} is an SQLite file but not an adedge event store (tables: "
            f"{', '.join(sorted(tables))})",
            "point storage.path at a folder of its own",
        )
    if version > 0 and not tables >= OUR_TABLES:
        raise corrupt_store(path, f"tables {sorted(OUR_TABLES - tables)} are missing")
    mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise AdedgeError(
            f"SQLite cannot use WAL mode for {path} (it answered {mode!r})",
            "put storage.path on a local disk (WAL needs shared memory; network shares have none)",
        )
    db.execute("PRAGMA synchronous=FULL")
    problem = db.execute("PRAGMA quick_check").fetchone()[0]
    if problem != "ok":
        raise corrupt_store(path, problem)
    if version == 0:
        with transaction(db):
            for statement in SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    while 0 < version < SCHEMA_VERSION:  # an older store, upgraded in place, step by step
        with transaction(db):
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            version += 1
            db.execute(f"PRAGMA user_version = {version}")


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed whole (and synced) or rolled back whole."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def corrupt_store(path: Path, detail: str) -> AdedgeError:
    return AdedgeError(
        f"{path} is not a readable event store ({detail})",
        f"move it away (mv {path} {path}.broken) and start again: a new empty store is made",
    )


def _cannot_open(path: Path, exc: sqlite3.Error) -> AdedgeError:
    return AdedgeError(
        f"cannot open the event store {path} ({exc})",
        "check that storage.path is on a local disk the service may write",
    )
