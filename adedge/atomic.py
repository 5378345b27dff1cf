"""Write whole artefacts so that a crash never leaves a half-written one under the final name.

Whole artefacts (bundles, checkpoints, summaries, eval results) are written under a hidden
temporary name in the target folder and renamed into place. Their permissions follow the
umask as a plain ``open`` would (``mkstemp``/``mkdtemp`` would make them 0600/0700, which
locks out a service user such as the Jetson unit's ``User=adedge`` and every log reader).

A process killed mid-write (kill -9, OOM, power cut) leaves its temporary behind; the next
write of the same target removes those of processes that no longer run (the writer's PID is
in the name). Record streams (JSONL, video) are not written here: they are appended under
their real names (``adedge.runtime.sinks``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PARTIAL = ".partial"
# a temporary without a PID (adedge before 0.2) is stale once this old
UNOWNED_STALE_SECONDS = 600.0


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (``os.umask``
    alone must set it to read it, a race with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while a temporary is created and its name bound.

    The command line turns both into exceptions; one landing between ``mkdtemp`` and the
    ``try`` that removes the temporary left it behind (seen in CI: an export interrupted
    the instant its folder appeared). A signal that arrives meanwhile is noted and raised
    again on leaving, inside the ``try``. (Masking it would not do: another thread of the
    process takes it and Python still runs the handler in the main thread.) Handlers run
    only in the main thread, so elsewhere there is nothing to hold back."""
    held = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.getsignal(number) for number in held]
    if threading.current_thread() is not threading.main_thread() or None in previous:
        yield  # no Python handler can interrupt here, or one we could not put back
        return
    arrived: list[int] = []
    for number in held:
        signal.signal(number, lambda number, _frame: arrived.append(number))
    try:
        yield
    finally:
        for number, handler in zip(held, previous, strict=True):
            signal.signal(number, handler)
        for number in arrived:
            signal.raise_signal(number)


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def temporary_sibling(path: Path) -> Path:
    """A fresh name in the same folder (same file system, so ``os.replace`` is atomic),
    ending in the real suffix (writers such as OpenCV's pick the format from the name),
    with the permissions a plain ``open`` would give it under the umask."""
    fd, name = tempfile.mkstemp(
        prefix=_temporary_prefix(path), suffix=f"{PARTIAL}{path.suffix}", dir=path.parent
    )
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    return Path(name)


def _owner_alive(name: str, final: Path, now: float, mtime: float) -> bool:
    """Whether the process that made temporary ``name`` of ``final`` may still write it."""
    rest = name[len(f".{final.name}.") :]
    match = re.match(r"(\d+)\.", rest)
    if match is None:  # adedge before 0.2 wrote no PID: trust the age
        return now - mtime < UNOWNED_STALE_SECONDS
    pid = int(match.group(1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def stale_temporaries(final: Path) -> list[Path]:
    """Temporaries of ``final`` (files or folders) left by writers that are gone."""
    folder = final.parent
    if not folder.is_dir():
        return []
    now = time.time()
    stale = []
    ours = re.compile(
        re.escape(f".{final.name}.")
        + r"(\d+\.)?[A-Za-z0-9_]{8}("
        + re.escape(PARTIAL)
        + r".*|\.old)$"
    )
    for candidate in folder.glob(f".{glob_escape(final.name)}.*"):
        if not ours.match(candidate.name):
            continue
        try:
            mtime = candidate.lstat().st_mtime
        except OSError:
            continue
        if not _owner_alive(candidate.name, final, now, mtime):
            stale.append(candidate)
    return sorted(stale)


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Delete the temporaries a killed writer left beside ``final``; returns what went."""
    removed = []
    for path in stale_temporaries(final):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp: Path | None = None
    try:
        with _signals_deferred():
            tmp = temporary_sibling(final)
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _temporary_folder(final: Path, suffix: str) -> Path:
    folder = Path(
        tempfile.mkdtemp(prefix=_temporary_prefix(final), suffix=suffix, dir=final.parent)
    )
    folder.chmod(0o777 & ~current_umask())
    return folder


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder under a temporary name; swap it in for ``path`` only on success.

    An existing folder at ``path`` is kept until the new one is complete, then removed.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp: Path | None = None
    try:
        with _signals_deferred():
            tmp = _temporary_folder(final, PARTIAL)
        yield tmp
        if final.exists():
            old = _temporary_folder(final, ".old")
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
