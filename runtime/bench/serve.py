"""`adedge bench --serve`: N cameras through one service (one shared engine) against N
separate ``adedge stream`` processes, on the same machine in one run.

For each model (a whole-frame and a tiled bundle), each source kind (OpenCV's vtest.avi
looped, 768x576; the synthetic grass texture, 512x512) and each N, both sides run unpaced
for a fixed window after a warm-up (:mod:`adedge.runtime.bench.serve_runs`), and one row
says: aggregate scored fps of each side and their ratio (service/processes), fairness
(min/max per-camera scored fps), the worst camera's p99 latency, and peak RSS (the service
process against the sum of the N processes). No alarm fires on either side (the threshold is
set above every score): the rows measure scoring, not event evidence. So the service's
cameras keep no clip pre-roll (with no event it holds frames for nothing, and at an unpaced
camera's rate it is the largest memory of all: ``pre_s`` x fps frames, 3 s x 120 fps of
768x576 is about 480 MB per camera); that is evidence's cost, not the shared engine's. The
service runs without its HTTP server; everything else is its default.

The issue's goal, reported per row and never asserted (speed belongs in benchmarks): the
shared engine wins on aggregate throughput for the tiled model at N >= 4, with min/max
per-camera fps >= 0.8.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adedge.errors import AdedgeError
from adedge.paths import find_vtest
from adedge.runtime.bench.serve_runs import (
    CameraSpec,
    RunSettings,
    SideResult,
    run_process_side,
    run_service_side,
)

CAMERA_COUNTS = (1, 2, 4, 8)
SOURCE_KINDS = ("vtest", "texture")
GOAL_CAMERAS = 4  # the goal is for N >= 4 ...
GOAL_FAIRNESS = 0.8  # ... with min/max per-camera fps at least this
GOAL = (
    f"tiled model, N >= {GOAL_CAMERAS}: service fps > processes fps and service "
    f"min/max per-camera fps >= {GOAL_FAIRNESS}"
)
Log = Callable[[str], None]


@dataclass(frozen=True)
class BenchModel:
    """A bundle in the benchmark; ``tiled`` when a stage has tiling (the goal's kind)."""

    name: str
    path: Path
    tiled: bool

    @property
    def kind(self) -> str:
        return "tiled" if self.tiled else "whole-frame"


@dataclass(frozen=True)
class BenchSource:
    """A source kind; ``uri(index)`` is camera ``index``'s source."""

    name: str
    describe: str
    template: str  # with {index}
    loop: bool

    def camera(self, index: int) -> CameraSpec:
        return CameraSpec(self.template.format(index=index), self.loop)


@dataclass
class ServeBenchRow:
    """One (model, source, N): both sides and whether the goal applies and is met."""

    model: BenchModel
    source: str
    cameras: int
    service: SideResult
    processes: SideResult

    @property
    def ratio(self) -> float | None:
        return self.service.fps / self.processes.fps if self.processes.fps > 0 else None

    @property
    def goal_applies(self) -> bool:
        return self.model.tiled and self.cameras >= GOAL_CAMERAS

    @property
    def meets_goal(self) -> bool | None:
        """None where the goal does not apply."""
        if not self.goal_applies:
            return None
        fairness = self.service.fairness
        return bool(
            self.ratio is not None
            and self.ratio > 1.0
            and fairness is not None
            and fairness >= GOAL_FAIRNESS
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "kind": self.model.kind,
            "source": self.source,
            "cameras": self.cameras,
            "service_fps": self.service.fps,
            "processes_fps": self.processes.fps,
            "ratio": self.ratio,
            "service_min_fps": self.service.min_fps,
            "service_max_fps": self.service.max_fps,
            "service_fairness": self.service.fairness,
            "processes_min_fps": self.processes.min_fps,
            "processes_max_fps": self.processes.max_fps,
            "processes_fairness": self.processes.fairness,
            "service_p99_ms": self.service.p99_ms,
            "processes_p99_ms": self.processes.p99_ms,
            "service_rss_mb": self.service.rss_peak_mb,
            "processes_rss_mb": self.processes.rss_peak_mb,
            "service_per_camera_fps": self.service.per_camera_fps,
            "processes_per_camera_fps": self.processes.per_camera_fps,
            "goal_applies": self.goal_applies,
            "meets_goal": self.meets_goal,
        }


@dataclass
class ServeBenchReport:
    machine: dict[str, Any]
    settings: RunSettings
    models: list[BenchModel]
    rows: list[ServeBenchRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": vars(self.settings),
            "models": [{"name": m.name, "path": str(m.path), "kind": m.kind} for m in self.models],
            "goal": GOAL,
            "notes": self.notes,
            "rows": [row.to_dict() for row in self.rows],
        }


def parse_cameras(text: str) -> tuple[int, ...]:
    """``--cameras 1,2,4,8``: positive camera counts."""
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise AdedgeError(f"--cameras '{text}' is not a list of positive counts", "e.g. 1,2,4,8")
    if max(counts) > 64:
        raise AdedgeError(f"--cameras '{text}' goes past 64 cameras", "e.g. 1,2,4,8")
    return counts


def parse_sources(text: str) -> tuple[str, ...]:
    """``--sources vtest,texture``: known source kinds."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in SOURCE_KINDS]
    if not names or unknown:
        raise AdedgeError(
            f"--sources '{text}' names no known source kind",
            f"use one or more of {','.join(SOURCE_KINDS)}",
        )
    return names


def check_settings(settings: RunSettings) -> None:
    """One line per bad setting, before anything starts."""
    if not settings.seconds > 0:
        raise AdedgeError(f"--seconds {settings.seconds} must be positive", "e.g. --seconds 10")
    if not settings.warmup >= 0:
        raise AdedgeError(f"--warmup {settings.warmup} must be 0 or more", "e.g. --warmup 3")
    if settings.threads < 0:
        raise AdedgeError(f"--threads {settings.threads} is negative", "0 (every core) or more")
    if settings.max_batch is not None and settings.max_batch < 1:
        raise AdedgeError(f"--max-batch {settings.max_batch} must be >= 1", "e.g. 64")
    if settings.max_delay_ms is not None and not settings.max_delay_ms >= 0:
        raise AdedgeError(f"--max-delay-ms {settings.max_delay_ms} must be >= 0", "e.g. 5")


def bench_model(path: Path) -> BenchModel:
    """A bundle folder as a benchmark model (the card read, so a bad bundle fails first)."""
    from adedge.bundle import load_bundle

    card = load_bundle(path).card
    tiled = any(stage.tiling is not None for stage in card.stages)
    return BenchModel(Path(path).name, Path(path), tiled)


def bench_sources(names: tuple[str, ...]) -> tuple[list[BenchSource], list[str]]:
    """The source kinds that exist here, and a note for each one left out or replaced."""
    sources, notes = [], []
    for name in names:
        if name == "vtest":
            video = find_vtest()
            if video is None:
                notes.append(
                    "vtest.avi not found (make system-deps fetches it): its rows are left out"
                )
                continue
            sources.append(BenchSource("vtest", "vtest.avi 768x576, looped", str(video), True))
        elif importlib.util.find_spec("skimage") is not None:
            template = "synthetic:texture=grass,size=512,seed={index}"
            sources.append(BenchSource("texture", "synthetic grass 512x512", template, False))
        else:
            notes.append("scikit-image is not installed: 'texture' is the procedural surface")
            template = "synthetic:size=512,seed={index}"
            sources.append(BenchSource("texture", "synthetic surface 512x512", template, False))
    return sources, notes


def machine_info() -> dict[str, Any]:
    """nproc, the CPU model (/proc/cpuinfo) and the load average now."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model or "unknown", "load_before": _load()}


def _load() -> list[float]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


def run_serve_bench(
    models: list[BenchModel],
    sources: list[BenchSource],
    counts: tuple[int, ...],
    settings: RunSettings,
    log: Log,
    notes: list[str] | None = None,
) -> ServeBenchReport:
    """Every (model, source, N) case, the service side then the processes side."""
    check_settings(settings)
    report = ServeBenchReport(machine_info(), settings, models, notes=list(notes or []))
    with tempfile.TemporaryDirectory(prefix="adedge-bench-serve-") as scratch:
        for model in models:
            for source in sources:
                for count in counts:
                    cameras = [source.camera(index) for index in range(count)]
                    case = Path(scratch) / f"{model.name}-{source.name}-{count}"
                    log(f"{model.kind} {model.name}, {source.name}, {count} camera(s): service")
                    service = run_service_side(model.path, cameras, settings, case / "service")
                    log(f"{model.kind} {model.name}, {source.name}, {count} camera(s): processes")
                    processes = run_process_side(model.path, cameras, settings, case / "streams")
                    row = ServeBenchRow(model, source.name, count, service, processes)
                    report.rows.append(row)
                    log(_row_line(row))
    report.machine["load_after"] = _load()
    return report


def _row_line(row: ServeBenchRow) -> str:
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
    return (
        f"  service {row.service.fps:.1f} fps, processes {row.processes.fps:.1f} fps, ratio {ratio}"
    )


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_markdown(report: ServeBenchReport) -> str:
    """The report as a markdown table, with the machine, settings, goal and notes."""
    machine, s = report.machine, report.settings
    batching = (
        f"max_batch {s.max_batch or 'default'}, max_delay_ms "
        f"{'default' if s.max_delay_ms is None else s.max_delay_ms}"
    )
    lines = [
        f"Machine: {machine['cpu']}, {machine['nproc']} cores; load average before "
        f"{machine.get('load_before')}, after {machine.get('load_after')}.",
        f"Each case: {s.warmup:g} s warm-up, then {s.seconds:g} s counted; backend "
        f"{s.backend}, ONNX Runtime threads {s.threads or 'every core'} per process; "
        f"service engine {batching}.",
        "Models: " + "; ".join(f"{m.name} ({m.kind})" for m in report.models) + ".",
        "fps: frames scored in the window, all cameras; min/max: slowest over fastest camera. "
        "p99: worst camera, from the frame read to its score (service: its last 512 frames; "
        "processes: the window's, read time to arrival on the pipe). RSS: peak (VmHWM), the "
        "N processes summed. No event fires on either side; the service keeps no clip "
        "pre-roll.",
        "",
        "| model | source | N | service fps | processes fps | ratio | service min/max "
        "| processes min/max | service p99 ms | processes p99 ms | service RSS MB "
        "| processes RSS MB | goal |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in report.rows:
        goal = {None: "n/a", True: "met", False: "not met"}[row.meets_goal]
        lines.append(
            f"| {row.model.kind} | {row.source} | {row.cameras} | {_num(row.service.fps)} "
            f"| {_num(row.processes.fps)} | {_num(row.ratio, 2)} "
            f"| {_num(row.service.fairness, 2)} | {_num(row.processes.fairness, 2)} "
            f"| {_num(row.service.p99_ms, 0)} | {_num(row.processes.p99_ms, 0)} "
            f"| {_num(row.service.rss_peak_mb, 0)} | {_num(row.processes.rss_peak_mb, 0)} "
            f"| {goal} |"
        )
    lines += ["", f"Goal: {GOAL}."]
    lines += [f"Note: {note}." for note in report.notes]
    return "\n".join(lines)
