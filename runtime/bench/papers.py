"""Per-image speed of every method at the papers' input sizes, beside the papers' timings.

One run measures, for each case (method, input size, stages), side by side on this machine:

* the whole trained torch model in eager mode, as the authors' test pass runs it
  (``Method.full_model_forward``: what their per-image timings cover),
* the pruned torch inference module in eager mode (what export traces),
* the exported graph on ONNX Runtime FP32, its mixed FP16 twin (ONNX Runtime CPU runs it,
  mostly to validate it: CPUs have no FP16 arithmetic) and its static INT8 (QDQ) twin,
* TensorRT FP16 and FP32 engines where ``tensorrt`` imports and a GPU is present,
* the end-to-end stream on ``vtest.avi`` (decode -> preprocess/tile -> infer -> aggregate),

with per-frame latency p50/p95 at batch 1 (a tiled frame is one batch of all its tiles),
throughput at the best batch, FLOPs per frame (2 x MACs of Conv, ConvTranspose, Gemm,
MatMul: the pruned graph's counted from its ONNX nodes, the full model's by torch as it runs),
the bytes a frame moves (``flops.traffic_bytes``, per graph precision), and the fraction of
its *roof* each backend reaches: the lower of its precision's compute peak and memory
bandwidth x arithmetic intensity, all measured in the same run (:mod:`.roofline`). For INT8
graphs it also counts the convolutions ONNX Runtime runs as integer kernels
(:mod:`.fusion`). Weights are the paper preset's random initialisation: speed does not
depend on weight values.

    adedge bench --papers --report benchmarks/results/papers  # .json, .md and .png
    python benchmarks/papers.py                                 # the same, with defaults

The papers' figures are quoted with their hardware; they are other machines (GPUs), so the
ratios that mean something are the ones measured here side by side (ORT vs torch eager).

This module measures and is torch-free; the cases are built by the export stage (its
``paper_cases`` module: paper-preset torch models, their traced graphs, and the torch calls
of the full model and the pruned scorer), which `adedge bench --papers` hands in.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from adedge.bundle import StageSpec
from adedge.errors import AdedgeError
from adedge.formats import BACKENDS, BackendKind
from adedge.paths import find_vtest
from adedge.registry import PaperTime, get_method
from adedge.runtime.backends import create_backend
from adedge.runtime.bench.roofline import Roofs, measure_roofs
from adedge.runtime.bench.timing import machine, time_call
from adedge.runtime.detector import Detector

BATCHES = (1, 8, 32)
MAX_ROWS = 512  # cap on network inputs per call when finding the best batch
FULL, PRUNED = "torch eager, full model", "torch eager, pruned"


def _spellings(kind: BackendKind) -> tuple[str, ...]:
    """Every ``--backend kind:precision`` the backend table allows, default precision first."""
    return tuple(f"{kind.value}:{p.value}" for p in BACKENDS[kind].precisions)


GRAPH_BACKENDS = _spellings(BackendKind.ONNXRUNTIME)
ENGINE_BACKENDS = _spellings(BackendKind.TENSORRT)


@dataclass(frozen=True)
class StageCase:
    mode: str | None
    image_size: int
    channels: int


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    stages: tuple[StageCase, ...]

    @property
    def papers(self) -> tuple[PaperTime, ...]:
        """The paper's timings at this input size, as the method's file registers them (read
        by the registry from the file's text: nothing of the method is imported here)."""
        return get_method(self.method).paper_times_at(self.stages[0].image_size)


CASES = (
    Case("ygan 32x32 grey", "ygan", (StageCase(None, 32, 1),)),
    Case("ygan 256x256 rgb", "ygan", (StageCase(None, 256, 3),)),
    Case("cbigan 128x128 rgb object", "cbigan", (StageCase("object", 128, 3),)),
    Case("cbigan 512x512 rgb texture (64 tiles)", "cbigan", (StageCase("texture", 512, 3),)),
    Case("ddrid 32x32 grey", "ddrid", (StageCase(None, 32, 1),)),
    Case("panda 64x64 rgb", "panda", (StageCase(None, 64, 3),)),
    Case(
        "igd 256x256 rgb global + 225 local patches",
        "igd",
        (StageCase("global", 256, 3), StageCase("local", 256, 3)),
    ),
)


EagerCall = Callable[[np.ndarray], Callable[[], Any]]  # a batch -> a no-argument torch call


@dataclass
class BenchStage:
    """One stage of a built case: its graphs in ``bundle`` (``spec`` names them), its tiles
    per frame, FLOPs, and ``eager``: for the torch rows (``FULL``, ``PRUNED``), a call on a
    batch, built by the export stage."""

    name: str
    spec: StageSpec
    bundle: Path
    tiles: int
    flops_per_input: int  # the pruned graph's, counted from ONNX
    full_flops_per_input: int  # the full model's, counted by torch as it runs
    full_is_pruned: bool  # the method's test pass is its pruned scorer (no override)
    eager: dict[str, EagerCall] = field(default_factory=dict)
    bytes_per_input: dict[str, int] = field(default_factory=dict)  # precision -> traffic
    fusion: dict[str, int] | None = None  # the INT8 graph's (fusion.Fusion.to_dict())
    sessions: dict[tuple[str, int], Any] = field(default_factory=dict)  # opened once each


Build = Callable[[Case, Path], list[BenchStage]]  # a case's stages, built into a folder


def select_cases(pattern: str) -> list[Case]:
    """Cases whose name contains ``pattern`` (all for an empty one); none is an error."""
    chosen = [case for case in CASES if pattern in case.name]
    if not chosen:
        raise AdedgeError(
            f"no benchmark case matches '{pattern}'",
            "choose a part of one of: " + "; ".join(case.name for case in CASES),
        )
    return chosen


def engines_available() -> bool:
    """TensorRT rows are measured only where the package imports (a GPU machine)."""
    return importlib.util.find_spec("tensorrt") is not None


def stage_call(stage: BenchStage, backend: str, batch: np.ndarray, threads: int):
    """A no-argument call scoring ``batch`` through one stage on ``backend``."""
    if backend in stage.eager:
        return stage.eager[backend](batch)
    return partial(open_session(stage, backend, len(batch), threads).run, batch)


def open_session(stage: BenchStage, backend: str, rows: int, threads: int) -> Any:
    """The stage's session on ``backend``, opened once (engines: once per max batch)."""
    engine = backend.startswith("tensorrt")
    key = (backend, rows if engine else 0)
    if key not in stage.sessions:
        if engine:
            from adedge.runtime.backends.tensorrt import TensorRTBackend

            precision = backend.partition(":")[2]
            session = TensorRTBackend(stage.bundle, stage.spec, precision, max_batch=rows)
        else:
            graph = stage.bundle / stage.spec.file
            session = create_backend(backend, graph, stage.spec, threads=threads)
        stage.sessions[key] = session
    return stage.sessions[key]


def frame_runner(
    stages: list[BenchStage], backend: str, frames: int, threads: int
) -> Callable[[], Any]:
    """One call scoring ``frames`` frames through every stage (all tiles in one batch)."""
    rng = np.random.default_rng(0)
    calls = []
    for stage in stages:
        spec = stage.spec.input
        shape = (frames * stage.tiles, spec.channels, spec.height, spec.width)
        batch = rng.uniform(-1, 1, shape).astype(np.float32)
        calls.append(stage_call(stage, backend, batch, threads))
    return lambda: [call() for call in calls]


def measure_backend(
    stages: list[BenchStage], backend: str, seconds: float, threads: int
) -> dict[str, Any]:
    """p50/p95 per frame at one frame per call; the best frames/s over ``BATCHES`` (a batch is
    tried while it has at most ``MAX_ROWS`` inputs and one call of it fits in ``seconds``)."""
    times = time_call(frame_runner(stages, backend, 1, threads), seconds) * 1e3
    best_fps, best_batch = 1e3 / float(np.median(times)), 1
    per_frame_rows = sum(stage.tiles for stage in stages)
    for frames in BATCHES[1:]:
        # larger batches only while one call fits the time budget and the row cap
        if frames * per_frame_rows > MAX_ROWS or frames * times.min() / 1e3 > max(seconds, 1):
            break
        run = frame_runner(stages, backend, frames, threads)
        fps = frames / float(np.median(time_call(run, seconds / 2)))
        if fps > best_fps:
            best_fps, best_batch = fps, frames
    return {
        "ms_per_frame_p50": float(np.median(times)),
        "ms_per_frame_p95": float(np.quantile(times, 0.95)),
        "best_frames_per_second": best_fps,
        "best_batch_frames": best_batch,
    }


def stream_fps(
    bundle: Path,
    video: Path | None,
    threads: int,
    seconds: float,
    frames: int = 100,
    backend: str = "onnxruntime",
) -> dict[str, Any] | None:
    """The video through a Detector on ``backend`` (the FP32 graphs by default): decode,
    tile, infer, aggregate; up to ``frames`` frames or ``seconds`` (at least 5 frames)."""
    if video is None:
        return None
    detector = Detector(bundle, threads=threads, backend=backend)
    capture = cv2.VideoCapture(str(video))
    ok, frame = capture.read()
    if not ok:
        raise AdedgeError(f"OpenCV cannot read a frame from '{video}'", "pass another --video")
    detector.score_frames([frame])  # warm-up
    scored, start = 0, time.perf_counter()
    while scored < frames and (scored < 5 or time.perf_counter() - start < seconds):
        ok, frame = capture.read()
        if not ok:
            break
        detector.score_frames([frame])
        scored += 1
    capture.release()
    return {"frames": scored, "frames_per_second": scored / (time.perf_counter() - start)}


# --- the run ---------------------------------------------------------------------------------


def precision_of(backend: str) -> str:
    """The arithmetic a backend row runs: int8 for the INT8 graph, else float32 (ONNX
    Runtime's CPU provider runs the FP16 graph in FP32; torch rows are FP32)."""
    return "int8" if backend.endswith(":int8") else "fp32"


def intensity(stages: list[BenchStage], backend: str, flops: int) -> float | None:
    """FLOPs per byte moved of what ``backend`` runs (None: the torch full model, whose
    traffic the graphs do not describe)."""
    if backend == FULL:
        return None
    precision = precision_of(backend)
    moved = sum(s.bytes_per_input.get(precision, 0) * s.tiles for s in stages)
    return flops / moved if moved else None


def backends_for(stages: list[BenchStage]) -> list[str]:
    graphs = [
        b
        for b in GRAPH_BACKENDS
        if all(s.spec.graph(b.partition(":")[2]) is not None for s in stages)
    ]
    return [FULL, PRUNED, *graphs, *(ENGINE_BACKENDS if engines_available() else ())]


def run_case(
    case: Case, build: Build, folder: Path, seconds: float, threads: int, video: Path | None
) -> dict[str, Any]:
    stages = build(case, folder)
    flops = sum(stage.flops_per_input * stage.tiles for stage in stages)
    full_flops = sum(stage.full_flops_per_input * stage.tiles for stage in stages)
    rows, skipped = {}, {}
    for backend in backends_for(stages):
        try:
            measured = measure_backend(stages, backend, seconds, threads)
        except AdedgeError as exc:  # e.g. TensorRT present but no GPU: say so, go on
            skipped[backend] = str(exc)
            continue
        work = full_flops if backend == FULL else flops
        reached = work * measured["best_frames_per_second"] / 1e9
        measured["gflops_per_second"] = reached
        measured["precision"] = precision_of(backend)
        measured["flops_per_byte"] = intensity(stages, backend, work)
        rows[backend] = measured
    return {
        "case": case.name,
        "method": case.method,
        "stages": [
            {
                "name": s.name,
                "input": [s.spec.input.channels, s.spec.input.height, s.spec.input.width],
                "tiles_per_frame": s.tiles,
            }
            for s in stages
        ],
        "gflops_per_frame": flops / 1e9,
        "full_model_gflops_per_frame": full_flops / 1e9,
        "full_model_is_pruned": all(stage.full_is_pruned for stage in stages),
        "bytes_per_frame": {
            precision: sum(s.bytes_per_input[precision] * s.tiles for s in stages)
            for precision in ("fp32", "int8")
            if all(precision in s.bytes_per_input for s in stages)
        },
        "int8_fusion": {s.name: s.fusion for s in stages if s.fusion is not None},
        "backends": rows,
        "skipped": skipped,
        "stream_vtest": stream_fps(folder, video, threads, seconds),
        "papers": [{"ms": p.ms, "hardware": p.hardware, "what": p.what} for p in case.papers],
    }


def run_papers(
    build: Build,
    seconds: float = 2.0,
    cases: str = "",
    threads: int = 1,
    video: Path | None = None,
    log: Callable[[str], None] = print,
    torch_version: str = "",
) -> dict[str, Any]:
    """Every selected case, built by ``build`` and measured side by side in one run (see the
    module docstring); ``torch_version`` is named in the machine line."""
    chosen = select_cases(cases)
    video = video or find_vtest()
    roofs = [measure_roofs(threads)]
    results: dict[str, Any] = {
        "machine": f"{machine()}, torch {torch_version}, {threads} thread(s) for every engine",
        "threads": threads,
        "video": str(video) if video else None,
        "command": f"adedge bench --papers --seconds {seconds} --threads {threads}"
        + (f" --cases '{cases}'" if cases else ""),
        "cases": [],
    }
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        for case in chosen:
            folder = Path(tmp) / case.name.replace(" ", "_")
            folder.mkdir()
            log(f"case {case.name}")
            results["cases"].append(run_case(case, build, folder, seconds, threads, video))
    roofs.append(measure_roofs(threads))  # the best of two, before and after the cases
    best = Roofs.best_of(roofs)
    results["roofs"] = {**vars(best), "measured": [vars(r) for r in roofs]}
    for row in results["cases"]:
        for measured in row["backends"].values():
            precision, per_byte = measured["precision"], measured["flops_per_byte"]
            roof = best.roof(precision, per_byte)
            measured["roof_gflops"] = roof
            measured["bound"] = best.bound(precision, per_byte)
            measured["fraction_of_roof"] = measured["gflops_per_second"] / roof
    return results
