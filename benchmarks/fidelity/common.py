"""Shared by the fidelity scripts: class lists and resumable training runs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from adedge.train.checkpoint import load_checkpoint
from adedge.train.trainer import TrainOptions, train


def parse_classes(text: str) -> list[int]:
    """``0-9`` or ``0,3,7``."""
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(c) for c in text.split(",")]


def train_resuming(options: TrainOptions, tag: str) -> list[dict[str, Any]]:
    """Train ``options.out`` up to ``options.epochs``, resuming a run folder that exists (a
    killed script picks up where it stopped); the run's per-epoch history."""
    done = options.out / "last.pt"
    if not (done.is_file() and load_checkpoint(done).epoch >= options.epochs):
        options.resume = done.is_file()
        train(options, log=lambda line: print(f"[{tag}] {line}", flush=True))
    return load_checkpoint(done).history


def finished_rows(report: Path, same_budget: Callable[[dict], bool]) -> list[dict]:
    """Rows already in ``report``'s JSON that were run with this budget: a rerun skips them,
    so a killed script resumes and a finished one only rewrites its report."""
    path = report.with_suffix(".json")
    if not path.is_file():
        return []
    return [row for row in json.loads(path.read_text(encoding="utf-8")) if same_budget(row)]


def run_units(
    rows: list[dict],
    units: Iterable[dict],
    run: Callable[[dict], dict],
    write: Callable[[list[dict]], None],
) -> list[dict]:
    """Run each unit (its identifying fields, e.g. ``{"class": 3, "seed": 0}``) that ``rows``
    lacks, rewriting the report after each, so a killed script loses one unit at most; then
    write once more, so a rerun with nothing left to run refreshes the report's text."""
    for unit in units:
        if any(all(row.get(key) == value for key, value in unit.items()) for row in rows):
            continue
        rows.append(run(unit))
        write(rows)
        print(json.dumps(rows[-1]), flush=True)
    if rows:
        write(rows)
    return rows
