"""The event store's media folder: where evidence files go, paths that never leave the
folder, and the walk at open that rebuilds the byte total after an unclean stop."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adedge.runtime.serve.event_types import MediaKind
from adedge.runtime.serve.store_db import transaction

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


@dataclass
class OpenReport:
    """What opening the store repaired after an unclean stop: files an event names but that
    are gone (the event is marked pruned), evidence written but not yet added when the
    process died (re-attached by its name), leftovers no event points at (deleted: nothing
    could find them), and outbox rows of channels no longer configured (dropped)."""

    media_missing: int = 0
    media_adopted: int = 0
    media_removed: int = 0
    outbox_dropped: dict[str, int] = field(default_factory=dict)

    @property
    def repaired_media(self) -> bool:
        return bool(self.media_missing or self.media_adopted or self.media_removed)


class MediaFolder:
    """Paths in the media folder. Names stored in events are relative to it; every path
    taken in is resolved (links followed) and refused if it leaves the folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.root = folder.resolve()

    def inside(self, path: Path | str) -> Path:
        """``path`` (absolute, or relative to the folder) resolved; ValueError outside."""
        resolved = (self.folder / path).resolve()  # an absolute path replaces the folder
        if resolved == self.root or not resolved.is_relative_to(self.root):
            raise ValueError(f"{path} is not a file inside the media folder {self.folder}")
        return resolved

    def file_of(self, name: str) -> Path | None:
        """A stored name's file, or None for a name that would leave the folder."""
        try:
            return self.inside(name)
        except ValueError:
            return None

    def relative(self, file: Path) -> str:
        return file.relative_to(self.root).as_posix()

    def discard(self, name: str) -> None:
        """Delete a stored name's file, and its day and camera folders once empty."""
        file = self.file_of(name)
        if file is None:
            return
        file.unlink(missing_ok=True)
        folder = file.parent
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                return
            folder = folder.parent

    def measure(self, names: Any) -> int:
        """The bytes on disk of the stored names (missing files count 0)."""
        files = (self.file_of(name) for name in names)
        return sum(file.stat().st_size for file in files if file is not None and file.is_file())

    def file_for(self, camera: str, event_id: str, kind: MediaKind, suffix: str) -> Path:
        """``<folder>/<camera>/<YYYY-MM-DD>/<event_id>-<kind><suffix>``, the folder made."""
        for what, name in (("camera", camera), ("event id", event_id)):
            if not _SAFE_NAME.fullmatch(name) or ".." in name:
                raise ValueError(f"{what} {name!r} cannot name a media file")
        if not _SAFE_SUFFIX.fullmatch(suffix):
            raise ValueError(f"media suffix {suffix!r} is not like '.jpg'")
        day = self.folder / camera / event_day(event_id)
        day.mkdir(parents=True, exist_ok=True)
        return day / f"{event_id}-{MediaKind(kind).value}{suffix}"

    def repair(self, db: sqlite3.Connection, report: OpenReport) -> int:
        """Make the events' media maps and the folder agree (see :class:`OpenReport`) and
        return the bytes the events hold: the one walk of the folder, at open."""
        held: dict[str, dict[str, Any]] = {}  # event id -> its JSON, as repaired
        stored: dict[str, tuple[str, int]] = {}  # event id -> its JSON and bytes, as read
        referenced: set[Path] = set()
        lost: set[str] = set()  # events a file of which is gone: marked pruned after the walk
        rows = db.execute("SELECT id, data, media_bytes FROM events WHERE media_files > 0")
        for event_id, text, size in rows.fetchall():
            data = held[event_id] = json.loads(text)
            stored[event_id] = text, size
            for kind, name in list(data["media"].items()):
                file = self.file_of(name)
                if file is not None and file.is_file():
                    referenced.add(file)
                else:
                    del data["media"][kind]
                    lost.add(event_id)
                    report.media_missing += 1
        for folder, _, names in os.walk(self.root, topdown=False):
            for name in names:
                path = Path(folder, name)
                if path in referenced:
                    continue
                parsed = media_name(name)
                data = None if parsed is None else self._owner(db, held, *parsed)
                if data is not None and parsed is not None and not path.is_symlink():
                    data["media"][parsed[1].value] = self.relative(path)
                    report.media_adopted += 1
                else:
                    path.unlink(missing_ok=True)
                    report.media_removed += 1
            if Path(folder) != self.root:
                with contextlib.suppress(OSError):  # removed only when empty
                    os.rmdir(folder)
        for event_id in lost:
            held[event_id]["media_pruned"] = True
        total = 0
        with transaction(db):
            for event_id, data in held.items():
                size = self.measure(data["media"].values())
                total += size
                text = json.dumps(data)
                if stored.get(event_id) == (text, size):
                    continue
                db.execute(
                    "UPDATE events SET data = ?, media_files = ?, media_bytes = ? WHERE id = ?",
                    (text, len(data["media"]), size, event_id),
                )
        return total

    @staticmethod
    def _owner(
        db: sqlite3.Connection, held: dict[str, dict[str, Any]], event_id: str, kind: MediaKind
    ) -> dict[str, Any] | None:
        """The stored event a stray file names, if it may take the file back: the event
        exists, was never pruned and has no file of that kind yet."""
        if event_id not in held:
            row = db.execute("SELECT data FROM events WHERE id = ?", (event_id,)).fetchone()
            if row is None:
                return None
            held[event_id] = json.loads(row[0])
        data = held[event_id]
        if data.get("media_pruned") or kind.value in data["media"]:
            return None
        return data


def event_day(event_id: str) -> str:
    """The UTC day of an event's start, read from its id (``<ms>-<camera>-<random>``)."""
    head = event_id.split("-", 1)[0]
    start = int(head) / 1000 if head.isdigit() else time.time()
    return datetime.fromtimestamp(start, timezone.utc).strftime("%Y-%m-%d")


def media_name(name: str) -> tuple[str, MediaKind] | None:
    """The (event id, kind) a file name says, as :meth:`MediaFolder.file_for` writes it;
    None for any other name (temporaries start with a dot)."""
    if name.startswith("."):
        return None
    event_id, dash, rest = name.rpartition("-")
    if not dash or not event_id:
        return None
    try:
        return event_id, MediaKind(rest.split(".", 1)[0])
    except ValueError:
        return None
