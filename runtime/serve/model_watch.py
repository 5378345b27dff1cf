"""``watch: true``: what tells the service that a model has a new version to check and swap
in (``ModelPool.swap``, the checks of ``swap.py``).

* A bundle folder: its files (names, sizes, mtimes) changed and then held still for one
  interval, so a copy in progress is not loaded half-written.
* A Triton model: the card in the server's model config is no longer the running one (a
  new version rolled into its repository and loaded by the server; the repository's config
  carries the newest version's card). Until the swap the running card's threshold applies.

A version that was refused is not tried again until it changes again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from adedge.runtime.backends.triton import RemoteModel
from adedge.runtime.detector import Detector


def folder_fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a bundle folder is rewritten or replaced: names, sizes, mtimes."""
    try:
        files = sorted(p for p in Path(folder).iterdir() if p.is_file())
        return tuple((p.name, (st := p.stat()).st_size, st.st_mtime_ns) for p in files)
    except OSError:
        return ()


def card_digest(card_dict: dict) -> str:
    return hashlib.sha256(json.dumps(card_dict, sort_keys=True).encode()).hexdigest()


class FolderWatch:
    """One model's bundle folder: :meth:`changed` is True once per settled change."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen = folder_fingerprint(folder)
        self.changing: tuple | None = None

    def changed(self) -> bool:
        now = folder_fingerprint(self.folder)
        if now == self.seen or not now:
            self.changing = None
            return False
        if self.changing != now:
            self.changing = now  # wait one more interval for it to settle
            return False
        self.seen, self.changing = now, None
        return True


class ServedCardWatch:
    """One Triton model: :meth:`changed` is True once per card the server newly carries."""

    def __init__(self) -> None:
        self.tried: str | None = None  # the served card last handed on (swapped or refused)

    def changed(self, detector: Detector | None) -> bool:
        if detector is None or not isinstance(detector.bundle, RemoteModel):
            return False
        served = detector.bundle.served_card()  # None while the server is unreachable
        if served is None:
            return False
        digest = card_digest(served.to_dict())
        if digest in (self.tried, card_digest(detector.card.to_dict())):
            return False
        self.tried = digest
        return True
