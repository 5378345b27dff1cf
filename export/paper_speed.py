"""Moved: the papers' benchmark measures in :mod:`adedge.runtime.bench.papers` (torch-free) and
reports in :mod:`adedge.runtime.bench.report`; its cases are built by
:mod:`adedge.export.paper_cases`. These names stay importable from here for one release."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adedge.export.paper_cases import (  # noqa: F401
    build_case,
    build_stage,
    count_torch_flops,
    inputs_per_frame,
    use_threads,
    write_card,
)
from adedge.runtime.bench.flops import count_flops  # noqa: F401
from adedge.runtime.bench.papers import (  # noqa: F401
    CASES,
    FULL,
    MAX_ROWS,
    PRUNED,
    Case,
    StageCase,
    frame_runner,
)
from adedge.runtime.bench.papers import BenchStage as BuiltStage  # noqa: F401
from adedge.runtime.bench.papers import run_papers as _run_papers
from adedge.runtime.bench.report import render_table, write_report  # noqa: F401


def run_papers(
    seconds: float = 2.0,
    cases: str = "",
    threads: int = 1,
    video: Path | None = None,
    log=print,
) -> dict[str, Any]:
    """The papers' cases built here and measured by the runtime's bench, as before."""
    version = use_threads(threads)
    return _run_papers(build_case, seconds, cases, threads, video, log, version)
