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
and the fraction of this machine's sgemm peak (numpy float32
matmul, measured in the same run) that each backend reaches. Weights are the paper preset's
random initialisation: speed does not depend on weight values.

    adedge bench --papers --report benchmarks/results/papers  # .json, .md and .png
    python benchmarks/papers.py                                 # the same, with defaults

The papers' figures are quoted with their hardware; they are other machines (GPUs), so the
ratios that mean something are the ones measured here side by side (ORT vs torch eager).
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import torch

from adedge.bundle import CARD_NAME, Card, StageSpec, ThresholdSpec, TilingSpec, sha256_file
from adedge.errors import AdedgeError
from adedge.export.fp16 import convert_to_mixed_fp16
from adedge.export.int8 import quantize_int8
from adedge.export.onnx_export import INPUT_NAME, trace_to_onnx
from adedge.paths import find_vtest
from adedge.preprocess import InputSpec
from adedge.runtime.backends import create_backend
from adedge.runtime.detector import Detector
from adedge.train.methods import load_method
from adedge.train.methods.base import Method, StagePlan, score_of
from adedge.train.views import tiles_per_image

BATCHES = (1, 8, 32)
MAX_ROWS = 512  # cap on network inputs per call when finding the best batch
FULL, PRUNED = "torch eager, full model", "torch eager, pruned"
GRAPH_BACKENDS = ("onnxruntime:fp32", "onnxruntime:fp16", "onnxruntime:int8")
ENGINE_BACKENDS = ("tensorrt:fp16", "tensorrt:fp32")


@dataclass(frozen=True)
class PaperTime:
    ms: float
    hardware: str
    what: str


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
    papers: tuple[PaperTime, ...] = ()


PANDA_TABLE_I = "PANDA Table I, Plant Village"
CASES = (
    Case(
        "ygan 32x32 grey",
        "ygan",
        (StageCase(None, 32, 1),),
        (PaperTime(2.6, "RTX 2080 Ti", "Y-GAN, 32x32 (batch 64, includes E_r + decoder)"),),
    ),
    Case(
        "ygan 256x256 rgb",
        "ygan",
        (StageCase(None, 256, 3),),
        (PaperTime(13.5, "RTX 2080 Ti", "Y-GAN, 256x256 PlantVillage"),),
    ),
    Case("cbigan 128x128 rgb object", "cbigan", (StageCase("object", 128, 3),)),
    Case("cbigan 512x512 rgb texture (64 tiles)", "cbigan", (StageCase("texture", 512, 3),)),
    Case("ddrid 32x32 grey", "ddrid", (StageCase(None, 32, 1),)),
    Case(
        "panda 64x64 rgb",
        "panda",
        (StageCase(None, 64, 3),),
        (
            PaperTime(15.2, "Titan X", "PANDA-GAN PWL (" + PANDA_TABLE_I + ")"),
            PaperTime(20.0, "Titan X", "PANDA-GAN PL_g (" + PANDA_TABLE_I + ")"),
            PaperTime(20.8, "Titan X", "PANDA-GAN PL_ps (" + PANDA_TABLE_I + ")"),
            PaperTime(16.8, "Titan X", "PANDA-GAN PWL (PANDA Table I, Laptop X-ray)"),
            PaperTime(6.9, "Titan X", "VAE (" + PANDA_TABLE_I + ")"),
            PaperTime(28.0, "Titan X", "GANomaly (" + PANDA_TABLE_I + ")"),
            PaperTime(65.0, "Titan X", "f-AnoGAN (" + PANDA_TABLE_I + ")"),
            PaperTime(87.0, "Titan X", "EGBAD (" + PANDA_TABLE_I + ")"),
            PaperTime(123.0, "Titan X", "Skip-GANomaly (" + PANDA_TABLE_I + ")"),
            PaperTime(7151.0, "Titan X", "AnoGAN (" + PANDA_TABLE_I + ")"),
        ),
    ),
    Case(
        "igd 256x256 rgb global + 225 local patches",
        "igd",
        (StageCase("global", 256, 3), StageCase("local", 256, 3)),
    ),
)


@dataclass
class BuiltStage:
    """One stage of a case: its torch model and scorer, and its graphs in ``bundle``."""

    name: str
    full: Callable[[torch.Tensor], torch.Tensor]
    scorer: torch.nn.Module
    spec: StageSpec
    bundle: Path
    tiles: int
    flops_per_input: int  # the pruned graph's, counted from ONNX
    full_flops_per_input: int  # the full model's, counted by torch as it runs
    full_is_pruned: bool  # the method's test pass is its pruned scorer (no override)
    sessions: dict[tuple[str, int], Any] = field(default_factory=dict)  # opened once each


def build_stage(method_name: str, case: StageCase, bundle: Path) -> BuiltStage:
    """Paper-preset model (random weights), traced to FP32, FP16 and INT8 graphs in ``bundle``."""
    method = load_method(method_name)
    torch.manual_seed(0)
    config = method.make_config(
        "paper", image_size=case.image_size, channels=case.channels, mode=case.mode
    )
    model = method.build(config, 9).eval()
    plan = method.stage_plan(config)
    scorer = method.inference_module(model).eval()
    norm = ((0.5,) * case.channels, (0.5,) * case.channels)
    spec = InputSpec(
        plan.input_size, plan.input_size, "gray" if case.channels == 1 else "rgb", *norm
    )
    path = bundle / f"{method_name}-{plan.name}-{case.image_size}.onnx"
    trace_to_onnx(scorer, spec, path, 17)
    full = partial(method.full_model_forward, model)
    return BuiltStage(
        plan.name,
        full,
        scorer,
        with_precision_twins(stage_spec(plan, spec, path), path),
        bundle,
        tiles_per_image(plan.frame_size, plan),
        count_flops(path, spec),
        count_torch_flops(full, spec),
        type(method).full_model_forward is Method.full_model_forward,
    )


def stage_spec(plan: StagePlan, spec: InputSpec, path: Path) -> StageSpec:
    """The card entry of a traced FP32 graph, with the plan's tiling."""
    tiling = None
    if plan.tiled:
        size = (plan.frame_size, plan.frame_size)
        tiling = TilingSpec(size, plan.tile, plan.stride or plan.tile, plan.padding)
    outputs = tuple(o.name for o in onnx.load(str(path)).graph.output)
    return StageSpec(
        plan.name,
        path.name,
        sha256_file(path),
        INPUT_NAME,
        spec,
        outputs,
        tiling=tiling,
        reduce=plan.reduce,
        weight=plan.weight,
    )


def with_precision_twins(stage: StageSpec, path: Path) -> StageSpec:
    """Write the FP16 twin and the INT8 (QDQ) graph beside ``path``; the card entry naming them.
    INT8 calibrates on uniform noise in the normalised range: speed, not accuracy, is timed."""
    fp16 = path.with_suffix(".fp16.onnx")
    onnx.save(convert_to_mixed_fp16(onnx.load(str(path)))[0], str(fp16))
    stage = replace(stage, fp16_file=fp16.name, fp16_sha256=sha256_file(fp16))
    int8 = path.with_suffix(".int8.onnx")
    spec = stage.input
    shape = (32, spec.channels, spec.height, spec.width)
    calibration = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
    try:
        quantize_int8(path, int8, INPUT_NAME, calibration)
    except Exception as exc:  # report, keep going: the other backends still measure
        print(f"  int8 skipped for {path.name}: {type(exc).__name__}: {exc}")
        return stage
    return replace(stage, int8_file=int8.name, int8_sha256=sha256_file(int8))


def write_card(stages: list[BuiltStage], bundle: Path) -> None:
    """A card for the stages' graphs, so the runtime's Detector and backends can load them."""
    card = Card("bench", tuple(s.spec for s in stages), ThresholdSpec(0.0, "benchmark"))
    (bundle / CARD_NAME).write_text(json.dumps(card.to_dict()), encoding="utf-8")


# --- FLOPs -----------------------------------------------------------------------------------


MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def count_flops(path: Path, spec: InputSpec) -> int:
    """2 x multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul for one input (batch 1),
    from the ONNX graph's nodes and the shapes its tensors take on one input."""
    model = onnx.load(str(path))
    nodes = [node for node in model.graph.node if node.op_type in MAC_OPS]
    names = {name for node in nodes for name in (*node.input[:2], node.output[0])}
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    shapes.update(run_shapes(model, names - set(shapes), spec))
    return 2 * sum(_node_macs(node, shapes) for node in nodes)


def run_shapes(model: onnx.ModelProto, names: set[str], spec: InputSpec) -> dict[str, list[int]]:
    """Shapes of the tensors ``names`` on one input, from running the graph with them as
    outputs: ONNX shape inference loses shapes after Resize and other data-dependent ops."""
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    present = {output.name for output in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in sorted(names - present))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    image = np.zeros((1, spec.channels, spec.height, spec.width), np.float32)
    outputs = [output.name for output in session.get_outputs()]
    values = session.run(outputs, {INPUT_NAME: image})
    return {name: list(np.shape(value)) for name, value in zip(outputs, values, strict=True)}


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    if node.op_type == "Conv":
        out, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
        if out and weight:
            return int(np.prod(out)) * int(np.prod(weight[1:]))
    if node.op_type == "ConvTranspose":
        inp, weight = shapes.get(node.input[0]), shapes.get(node.input[1])
        if inp and weight:
            return int(np.prod(inp)) * int(np.prod(weight[1:]))
    if node.op_type in ("Gemm", "MatMul"):
        a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
        if a and out:
            return int(np.prod(out)) * a[-1]
    return 0


def count_torch_flops(forward: Callable[[torch.Tensor], Any], spec: InputSpec) -> int:
    """FLOPs of one input through ``forward`` in eager mode (torch counts 2 x MACs of convs and
    matmuls, as ``count_flops`` does): results that nothing uses count too, as they run."""
    from torch.utils.flop_counter import FlopCounterMode

    image = torch.zeros(1, spec.channels, spec.height, spec.width)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        forward(image)
    return int(counter.get_total_flops())


def sgemm_gflops(threads: int, size: int = 1024, seconds: float = 2.0) -> float:
    """This machine's float32 matmul rate through numpy's BLAS on ``threads`` threads: the
    reference peak (ONNX Runtime's own GEMM may beat it, so fractions can pass 100%)."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    with threadpool_limits(threads):
        a @ a
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ a
            runs += 1
        return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9


# --- timing ----------------------------------------------------------------------------------


def time_call(run: Callable[[], Any], seconds: float, min_runs: int = 5) -> np.ndarray:
    run()
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def engines_available() -> bool:
    """TensorRT rows are measured only where the package imports (a GPU machine)."""
    return importlib.util.find_spec("tensorrt") is not None


def stage_call(stage: BuiltStage, backend: str, batch: np.ndarray, threads: int):
    """A no-argument call scoring ``batch`` through one stage on ``backend``."""
    if backend in (FULL, PRUNED):
        tensor = torch.from_numpy(batch)
        forward = stage.full if backend == FULL else lambda x: score_of(stage.scorer(x))

        def call() -> torch.Tensor:
            with torch.inference_mode():
                return forward(tensor)

        return call
    return partial(open_session(stage, backend, len(batch), threads).run, batch)


def open_session(stage: BuiltStage, backend: str, rows: int, threads: int) -> Any:
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
    stages: list[BuiltStage], backend: str, frames: int, threads: int
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
    stages: list[BuiltStage], backend: str, seconds: float, threads: int
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
    bundle: Path, video: Path | None, threads: int, seconds: float, frames: int = 100
) -> dict[str, Any] | None:
    """The video through a Detector on the FP32 graphs: decode, tile, infer, aggregate; up to
    ``frames`` frames or ``seconds`` (at least 5 frames)."""
    if video is None:
        return None
    detector = Detector(bundle, threads=threads)
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


def backends_for(stages: list[BuiltStage]) -> list[str]:
    graphs = [
        b for b in GRAPH_BACKENDS if all(s.spec.graph(b.partition(":")[2])[0] for s in stages)
    ]
    return [FULL, PRUNED, *graphs, *(ENGINE_BACKENDS if engines_available() else ())]


def run_case(
    case: Case, folder: Path, seconds: float, threads: int, video: Path | None
) -> dict[str, Any]:
    stages = [build_stage(case.method, stage, folder) for stage in case.stages]
    write_card(stages, folder)
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
        "backends": rows,
        "skipped": skipped,
        "stream_vtest": stream_fps(folder, video, threads, seconds),
        "papers": [vars(p) for p in case.papers],
    }


def inputs_per_frame(case: Case) -> int:
    """Network inputs one frame of ``case`` needs (its tiles, over all stages), unbuilt."""
    total = 0
    for stage in case.stages:
        method = load_method(case.method)
        config = method.make_config(
            "paper", image_size=stage.image_size, channels=stage.channels, mode=stage.mode
        )
        plan = method.stage_plan(config)
        total += tiles_per_image(plan.frame_size, plan)
    return total


def select_cases(pattern: str) -> list[Case]:
    """Cases whose name contains ``pattern`` (all for an empty one); none is an error."""
    chosen = [case for case in CASES if pattern in case.name]
    if not chosen:
        raise AdedgeError(
            f"no benchmark case matches '{pattern}'",
            "choose a part of one of: " + "; ".join(case.name for case in CASES),
        )
    return chosen


def run_papers(
    seconds: float = 2.0,
    cases: str = "",
    threads: int = 1,
    video: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every selected case, measured side by side in one run (see the module docstring)."""
    chosen = select_cases(cases)
    torch.set_num_threads(threads)
    video = video or find_vtest()
    sgemm = [sgemm_gflops(threads)]
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {threads} thread(s) for every engine",
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
            results["cases"].append(run_case(case, folder, seconds, threads, video))
    sgemm.append(sgemm_gflops(threads))  # the best of two, before and after the cases
    results["sgemm_gflops"] = max(sgemm)
    results["sgemm_gflops_measured"] = sgemm
    for row in results["cases"]:
        for measured in row["backends"].values():
            measured["fraction_of_sgemm_peak"] = measured["gflops_per_second"] / max(sgemm)
    return results


def label(backend: str) -> str:
    return backend.replace(":", " ")


def gflops(row: dict[str, Any], backend: str) -> float:
    """GFLOP per frame of what ``backend`` runs: the full model or the pruned graph."""
    return row["full_model_gflops_per_frame" if backend == FULL else "gflops_per_frame"]


def render_table(results: dict[str, Any]) -> str:
    """The terminal table: one line per case and backend, plus the stream."""
    lines = [
        f"machine: {results['machine']}; sgemm peak {results['sgemm_gflops']:.1f} GFLOP/s",
        f"{'case':44} {'GFLOP':>7} {'backend':24} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'best fps':>9} {'peak %':>7}",
    ]
    for row in results["cases"]:
        for backend, m in row["backends"].items():
            lines.append(
                f"{row['case'][:44]:44} {gflops(row, backend):>7.3f} {label(backend):24} "
                f"{m['ms_per_frame_p50']:>8.2f} {m['ms_per_frame_p95']:>8.2f} "
                f"{m['best_frames_per_second']:>9.1f} {100 * m['fraction_of_sgemm_peak']:>6.1f}%"
            )
        for backend, why in row["skipped"].items():
            lines.append(f"{row['case'][:44]:44} {'':>7} {label(backend):24} skipped: {why}")
        if row["stream_vtest"]:
            fps = row["stream_vtest"]["frames_per_second"]
            lines.append(
                f"{'':44} {'':>7} {'stream vtest.avi':24} {1e3 / fps:>8.2f} {'':>8} {fps:>9.1f}"
            )
    return "\n".join(lines)


def speedup(row: dict[str, Any], slow: str, fast: str) -> float | None:
    """p50 of ``slow`` over p50 of ``fast`` in one case, measured side by side."""
    b = row["backends"]
    if slow in b and fast in b:
        return b[slow]["ms_per_frame_p50"] / b[fast]["ms_per_frame_p50"]
    return None


def markdown(results: dict[str, Any], stem: str) -> str:
    lines = [
        "# Speed against the papers' per-image timings",
        "",
        f"Machine: {results['machine']}; numpy sgemm {results['sgemm_gflops']:.1f} GFLOP/s "
        f"(measured in the same run). Command: `{results['command']}`.",
        "",
        "Per frame, batch 1 (a tiled frame is one batch of its tiles); best throughput over "
        f"batches of {', '.join(map(str, BATCHES))} frames (at most {MAX_ROWS} network inputs "
        "per call). Weights are the paper preset's random initialisation: speed does not "
        "depend on them. *Full model*: the whole trained model as the authors' test pass runs "
        "it (what their timings cover); *pruned*: the inference subgraph that export traces.",
        "",
        "| case | GFLOP/frame | backend | p50 ms | p95 ms | best frames/s | % of sgemm peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["cases"]:
        for backend, m in row["backends"].items():
            lines.append(
                f"| {row['case']} | {gflops(row, backend):.3f} | {label(backend)} | "
                f"{m['ms_per_frame_p50']:.2f} | {m['ms_per_frame_p95']:.2f} | "
                f"{m['best_frames_per_second']:.1f} (batch {m['best_batch_frames']}) | "
                f"{100 * m['fraction_of_sgemm_peak']:.1f} |"
            )
        stream = row["stream_vtest"]
        if stream:
            lines.append(
                f"| {row['case']} | | stream on vtest.avi (decode+tile+infer+aggregate) | "
                f"{1e3 / stream['frames_per_second']:.2f} | | "
                f"{stream['frames_per_second']:.1f} | |"
            )
    lines += [
        "",
        "## Ratios measured side by side (p50 per frame, batch 1)",
        "",
        "| case | full model / ORT FP32 | pruned torch / ORT FP32 | ORT FP32 / ORT INT8 |",
        "|---|---|---|---|",
    ]
    for row in results["cases"]:
        ratios = (
            speedup(row, FULL, "onnxruntime:fp32"),
            speedup(row, PRUNED, "onnxruntime:fp32"),
            speedup(row, "onnxruntime:fp32", "onnxruntime:int8"),
        )
        cells = " | ".join("" if r is None else f"{r:.2f}x" for r in ratios)
        lines.append(f"| {row['case']} | {cells} |")
    same = [r["case"] for r in results["cases"] if r["full_model_is_pruned"]]
    if same:
        lines += [
            "",
            "The full model and the pruned scorer run the same networks for: "
            + "; ".join(same)
            + " (the authors' test pass needs nothing the export drops).",
        ]
    lines += [
        "",
        "## The papers' figures (their hardware, not this machine)",
        "",
        "| paper's figure | ms per image | its hardware | our case | ORT FP32 ms | ORT INT8 ms "
        "| torch full model ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["cases"]:
        ours = [
            row["backends"].get(backend, {}).get("ms_per_frame_p50")
            for backend in ("onnxruntime:fp32", "onnxruntime:int8", FULL)
        ]
        cells = " | ".join("" if ms is None else f"{ms:.2f}" for ms in ours)
        for paper in row["papers"]:
            lines.append(
                f"| {paper['what']} | {paper['ms']:g} | {paper['hardware']} | {row['case']} | "
                f"{cells} |"
            )
    engines = any("tensorrt" in b for row in results["cases"] for b in row["backends"])
    lines += [
        "",
        "CBiGAN, DDR-ID and IGD report no timings. The papers time batches on GPUs (Y-GAN: "
        "ms per batch of 64 divided by 64, host-to-device copy included, no CUDA sync), so "
        "only the ratios measured here side by side are like for like. FP16 on a CPU is a "
        "validation path (ONNX Runtime upcasts), not a speed path. TensorRT: "
        + ("measured above." if engines else "not measured (no TensorRT/GPU on this machine)."),
        "",
        f"![per-frame latency vs papers]({stem}.png)",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Log-scale bars per case: full model, pruned torch, ORT FP32, ORT INT8, the paper."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {
        "torch eager, full model (this CPU)": FULL,
        "torch eager, pruned (this CPU)": PRUNED,
        "adedge ONNX Runtime FP32 (this CPU)": "onnxruntime:fp32",
        "adedge ONNX Runtime INT8 (this CPU)": "onnxruntime:int8",
    }
    cases = results["cases"]
    x = np.arange(len(cases))
    width = 0.8 / (len(series) + 1)
    fig, ax = plt.subplots(figsize=(12, 6))
    for i, (name, backend) in enumerate(series.items()):
        values = [row["backends"].get(backend, {}).get("ms_per_frame_p50", np.nan) for row in cases]
        ax.bar(x + (i - len(series) / 2) * width, values, width, label=name)
    papers = [row["papers"][0]["ms"] if row["papers"] else np.nan for row in cases]
    ax.bar(x + len(series) / 2 * width, papers, width, label="paper's per-image time (its GPU)")
    labels = [row["case"].replace(" (64 tiles)", "\n(64 tiles)") for row in cases]
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms per frame (batch 1)")
    ax.set_title(results["machine"], fontsize=9)
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.28))
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(suffix=".png", dir=path.parent, delete=False) as handle:
        fig.savefig(handle.name, dpi=110)
    plt.close(fig)
    os.replace(handle.name, path)


def write_report(results: dict[str, Any], out: Path) -> list[Path]:
    """``out``.json, .md and .png, each written whole (temporary name, then rename)."""
    from adedge.atomic import write_json, write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (out.with_suffix(s) for s in (".json", ".md", ".png"))
    write_json(json_path, results)
    write_text(md_path, markdown(results, out.name))
    plot(results, png_path)
    return [json_path, md_path, png_path]
