"""Where results go: checked before any work starts, and never clobbered by surprise.

Every file a command will write (``--jsonl``, ``--save-video``, ``--summary-json``,
``eval --out``) is checked when the command starts, not when it ends: a folder on its path
that is a file, a folder that cannot be written (read-only, or not ours), a target that is
a folder. Each is one line naming the option, the path and what to do.

Record streams (JSONL events, video) are never replaced unless the user says so, as
Ultralytics never overwrites a run: an existing non-empty file is refused unless
``--overwrite`` (start it again) or ``--append`` (add to it) is given.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

from adedge.errors import AdedgeError

STDOUT = "-"  # ``--jsonl -``: the records go to standard output


class Existing(str, Enum):
    """What to do with an output file that already holds something."""

    REFUSE = "refuse"
    OVERWRITE = "overwrite"
    APPEND = "append"


def existing_policy(overwrite: bool, append: bool) -> Existing:
    if overwrite and append:
        raise AdedgeError(
            "--overwrite and --append contradict each other", "pass one of them, or neither"
        )
    if overwrite:
        return Existing.OVERWRITE
    return Existing.APPEND if append else Existing.REFUSE


def _nearest_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if os.path.lexists(parent):
            return parent
    return Path(".")


def check_creatable(path: str | os.PathLike[str], option: str) -> Path:
    """The folder in which ``path`` (a file or a folder) would be created, once it is clear
    this process can: the nearest existing folder on its path is a folder (not a file) that
    this process may write into (not read-only, not someone else's). Creates nothing."""
    target = Path(path).expanduser()
    folder = _nearest_existing(target.absolute().parent)
    if not folder.is_dir():
        raise AdedgeError(
            f"{option} '{path}': '{folder}' is a file, not a folder",
            f"choose another path for {option}",
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise AdedgeError(
            f"{option} '{path}': cannot write in '{folder}' (read-only or not yours)",
            f"choose a writable folder for {option}",
        )
    return folder


def check_writable(path: str | os.PathLike[str], option: str) -> Path:
    """``path`` as a Path once it is clear it can be written as a file; an AdedgeError
    otherwise (the target is a folder, or :func:`check_creatable` fails, or an existing
    target may not be written). Creates nothing."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise AdedgeError(f"{option} '{path}' is a folder", f"give {option} a file name")
    check_creatable(target, option)
    if target.exists() and not os.access(target, os.W_OK):
        raise AdedgeError(
            f"{option} '{path}' exists and cannot be written", f"choose another {option} path"
        )
    return target


def check_record_target(
    path: str | os.PathLike[str], option: str, policy: Existing, *, can_append: bool = True
) -> Path:
    """A record stream's target (JSONL, video): writable, and not holding an earlier run's
    records unless ``policy`` says what to do with them."""
    target = check_writable(path, option)
    if target.exists() and target.stat().st_size > 0:
        if policy is Existing.REFUSE:
            more = " or --append to add to it" if can_append else ""
            raise AdedgeError(
                f"{option} '{path}' already exists",
                f"pass --overwrite to replace it{more}, or choose another name",
            )
        if policy is Existing.APPEND and not can_append:
            raise AdedgeError(
                f"{option} '{path}' already exists and a video cannot be appended to",
                "pass --overwrite to replace it, or choose another name",
            )
    return target
