"""Reading the JSONL records a stream writes (see adedge.runtime.records)."""

from __future__ import annotations

import json
from pathlib import Path


def read_records(path: Path) -> list[dict]:
    """Every record, in order; a line that does not parse fails the test."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def frame_records(path: Path) -> list[dict]:
    """The ``frame`` records: one per scored frame."""
    return [record for record in read_records(path) if record["type"] == "frame"]


def records_of(path: Path, kind: str) -> list[dict]:
    return [record for record in read_records(path) if record["type"] == kind]
