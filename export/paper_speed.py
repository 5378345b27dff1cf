"""Per-image speed of every method at the papers' input sizes, beside the papers' timings.

One run measures, for each case (method, input size, stages), side by side on this machine:

* the pruned torch inference module in eager mode (what training produces),
* the exported graph on ONNX Runtime FP32, its mixed FP16 twin (ONNX Runtime CPU runs it,
  mostly to validate it: CPUs have no FP16 arithmetic) and its static INT8 (QDQ) twin,
* the end-to-end stream on ``vtest.avi`` (decode -> preprocess/tile -> infer -> aggregate),

with per-frame latency p50/p95 at batch 1 (a tiled frame is one batch of all its tiles),
throughput at the best batch, FLOPs per frame counted from the ONNX graph (2 x MACs of Conv,
ConvTranspose, Gemm, MatMul), and the fraction of this machine's sgemm peak (numpy float32
matmul, measured in the same run) that each backend reaches. Weights are the paper preset's
random initialisation: speed does not depend on weight values.

    python benchmarks/papers.py --out benchmarks/results/papers  # .json, .md and .png

The papers' figures are quoted with their hardware; they are other machines (GPUs), so the
ratios that mean something are the ones measured here side by side (ORT vs torch eager).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import torch

from adedge.bundle import CARD_NAME, Card, StageSpec, ThresholdSpec, TilingSpec, sha256_file
from adedge.export.fp16 import convert_to_mixed_fp16
from adedge.export.int8 import quantize_int8
from adedge.export.onnx_export import INPUT_NAME, trace_to_onnx
from adedge.preprocess import InputSpec
from adedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from adedge.runtime.detector import Detector
from adedge.train.methods import load_method
from adedge.train.trainer import score_of
from adedge.train.views import tiles_per_image

THREADS = 1  # --threads: the same for torch, ONNX Runtime and the sgemm reference
VTEST = Path("/tmp/usr/share/doc/opencv-doc/examples/data/vtest.avi")
BATCHES = (1, 8, 32)
MAX_ROWS = 2048  # cap on network inputs per call when finding the best batch


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


PANDA_TABLE_I = "PANDA Table I, Plant Village, Titan X"
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
            PaperTime(15.2, "Titan X", "PANDA-GAN PWL (Table I, Plant Village)"),
            PaperTime(28.0, "Titan X", "GANomaly (" + PANDA_TABLE_I + ")"),
            PaperTime(123.0, "Titan X", "Skip-GANomaly (" + PANDA_TABLE_I + ")"),
            PaperTime(87.0, "Titan X", "EGBAD (" + PANDA_TABLE_I + ")"),
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
    name: str
    scorer: torch.nn.Module
    spec: StageSpec
    path: Path
    tiles: int
    flops_per_input: int
    variants: dict[str, Path] = field(default_factory=dict)


def build_stage(method_name: str, case: StageCase, folder: Path) -> BuiltStage:
    method = load_method(method_name)
    torch.manual_seed(0)
    config = method.make_config(
        "paper", image_size=case.image_size, channels=case.channels, mode=case.mode
    )
    model = method.build(config, 9).eval()
    plan = method.stage_plan(config)
    scorer = method.inference_module(model).eval()
    colour = "gray" if case.channels == 1 else "rgb"
    norm = ((0.5,) * case.channels, (0.5,) * case.channels)
    spec = InputSpec(plan.input_size, plan.input_size, colour, *norm)
    path = folder / f"{method_name}-{plan.name}-{case.image_size}.onnx"
    trace_to_onnx(scorer, spec, path, 17)
    names = [o.name for o in onnx.load(str(path)).graph.output]
    tiling = None
    if plan.tiled:
        size = (plan.frame_size, plan.frame_size)
        tiling = TilingSpec(size, plan.tile, plan.stride or plan.tile, plan.padding)
    stage = StageSpec(
        plan.name,
        path.name,
        sha256_file(path),
        INPUT_NAME,
        spec,
        tuple(names),
        tiling=tiling,
        reduce=plan.reduce,
        weight=plan.weight,
    )
    built = BuiltStage(
        plan.name, scorer, stage, path, tiles_per_image(plan.frame_size, plan), count_flops(path)
    )
    built.variants["onnxruntime fp32"] = path
    fp16 = path.with_suffix(".fp16.onnx")
    onnx.save(convert_to_mixed_fp16(onnx.load(str(path)))[0], str(fp16))
    built.variants["onnxruntime fp16"] = fp16
    int8 = path.with_suffix(".int8.onnx")
    rng = np.random.default_rng(1)
    calibration = rng.uniform(-1, 1, (32, case.channels, plan.input_size, plan.input_size))
    try:
        quantize_int8(path, int8, INPUT_NAME, calibration.astype(np.float32))
        built.variants["onnxruntime int8"] = int8
    except Exception as exc:  # report, keep going: the other backends still measure
        print(f"  int8 skipped for {path.name}: {type(exc).__name__}: {exc}")
    return built


# --- FLOPs -----------------------------------------------------------------------------------


def count_flops(path: Path) -> int:
    """2 x multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul for one input (batch 1)."""
    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_value = 1
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    total = 0
    for node in model.graph.node:
        total += _node_macs(node, shapes)
    return 2 * total


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


def sgemm_gflops(size: int = 1024, seconds: float = 2.0) -> float:
    """This machine's float32 matmul rate through numpy's BLAS on ``THREADS`` threads."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    with threadpool_limits(THREADS):
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


def frame_runner(stages: list[BuiltStage], backend: str, frames: int) -> Callable[[], Any] | None:
    """One call scoring ``frames`` frames through every stage (all tiles in one batch)."""
    rng = np.random.default_rng(0)
    calls = []
    for stage in stages:
        spec = stage.spec.input
        shape = (frames * stage.tiles, spec.channels, spec.height, spec.width)
        batch = rng.uniform(-1, 1, shape).astype(np.float32)
        if backend == "torch eager":
            tensor = torch.from_numpy(batch)

            def call(scorer=stage.scorer, tensor=tensor):
                with torch.inference_mode():
                    return score_of(scorer(tensor))

        else:
            path = stage.variants.get(backend)
            if path is None:
                return None
            session = OnnxRuntimeBackend(path, stage.spec, threads=THREADS)

            def call(session=session, batch=batch):
                return session.run(batch)

        calls.append(call)
    return lambda: [call() for call in calls]


def measure_backend(stages: list[BuiltStage], backend: str, seconds: float) -> dict | None:
    single = frame_runner(stages, backend, 1)
    if single is None:
        return None
    times = time_call(single, seconds) * 1e3
    best_fps, best_batch = 1e3 / float(np.median(times)), 1
    per_frame_rows = sum(stage.tiles for stage in stages)
    for frames in BATCHES[1:]:
        if frames * per_frame_rows > MAX_ROWS:
            break
        run = frame_runner(stages, backend, frames)
        fps = frames / float(np.median(time_call(run, seconds / 2)))
        if fps > best_fps:
            best_fps, best_batch = fps, frames
    return {
        "ms_per_frame_p50": float(np.median(times)),
        "ms_per_frame_p95": float(np.quantile(times, 0.95)),
        "best_frames_per_second": best_fps,
        "best_batch_frames": best_batch,
    }


def stream_fps(stages: list[BuiltStage], folder: Path, frames: int = 100) -> dict | None:
    """vtest.avi through a Detector on the FP32 graphs: decode, tile, infer, aggregate."""
    if not VTEST.is_file():
        return None
    bundle = folder / "bundle"
    bundle.mkdir(exist_ok=True)
    for stage in stages:
        (bundle / stage.spec.file).write_bytes(stage.path.read_bytes())
    card = Card("bench", tuple(s.spec for s in stages), ThresholdSpec(0.0, "benchmark"))
    (bundle / CARD_NAME).write_text(json.dumps(card.to_dict()), encoding="utf-8")
    detector = Detector(bundle, threads=THREADS)
    capture = cv2.VideoCapture(str(VTEST))
    ok, frame = capture.read()
    detector.score_frames([frame])  # warm-up
    scored, start = 0, time.perf_counter()
    while scored < frames:
        ok, frame = capture.read()
        if not ok:
            break
        detector.score_frames([frame])
        scored += 1
    capture.release()
    return {"frames": scored, "frames_per_second": scored / (time.perf_counter() - start)}


# --- the run ---------------------------------------------------------------------------------

BACKENDS = ("torch eager", "onnxruntime fp32", "onnxruntime fp16", "onnxruntime int8")


def run_case(case: Case, folder: Path, seconds: float, peak: float) -> dict:
    stages = [build_stage(case.method, stage, folder) for stage in case.stages]
    flops = sum(stage.flops_per_input * stage.tiles for stage in stages)
    rows = {}
    for backend in BACKENDS:
        measured = measure_backend(stages, backend, seconds)
        if measured is None:
            continue
        reached = flops * measured["best_frames_per_second"] / 1e9
        measured["gflops_per_second"] = reached
        measured["fraction_of_sgemm_peak"] = reached / peak
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
        "backends": rows,
        "stream_vtest": stream_fps(stages, folder),
        "papers": [vars(p) for p in case.papers],
    }


def render_table(results: dict) -> str:
    lines = [
        f"machine: {results['machine']}; sgemm peak {results['sgemm_gflops']:.1f} GFLOP/s",
        f"{'case':44} {'GFLOP':>7} {'backend':18} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'best fps':>9} {'peak %':>7}",
    ]
    for row in results["cases"]:
        for backend, m in row["backends"].items():
            lines.append(
                f"{row['case'][:44]:44} {row['gflops_per_frame']:>7.3f} {backend:18} "
                f"{m['ms_per_frame_p50']:>8.2f} {m['ms_per_frame_p95']:>8.2f} "
                f"{m['best_frames_per_second']:>9.1f} {100 * m['fraction_of_sgemm_peak']:>6.1f}%"
            )
        if row["stream_vtest"]:
            lines.append(
                f"{'':44} {'':>7} {'stream vtest.avi':18} "
                f"{1e3 / row['stream_vtest']['frames_per_second']:>8.2f} {'':>8} "
                f"{row['stream_vtest']['frames_per_second']:>9.1f}"
            )
    return "\n".join(lines)


def write_markdown(results: dict, out: Path) -> None:
    lines = [
        "# Speed against the papers' per-image timings",
        "",
        f"Machine: {results['machine']}; numpy sgemm {results['sgemm_gflops']:.1f} GFLOP/s "
        f"(measured in the same run). Command: `{results['command']}`.",
        "",
        "Per frame, batch 1 (a tiled frame is one batch of its tiles); best throughput over "
        f"batches {BATCHES} frames. Paper weights are random: speed does not depend on them.",
        "",
        "| case | GFLOP/frame | backend | p50 ms | p95 ms | best frames/s | % of sgemm peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["cases"]:
        for backend, m in row["backends"].items():
            lines.append(
                f"| {row['case']} | {row['gflops_per_frame']:.3f} | {backend} | "
                f"{m['ms_per_frame_p50']:.2f} | {m['ms_per_frame_p95']:.2f} | "
                f"{m['best_frames_per_second']:.1f} | {100 * m['fraction_of_sgemm_peak']:.1f} |"
            )
        stream = row["stream_vtest"]
        if stream:
            lines.append(
                f"| {row['case']} | | stream on vtest.avi (decode+tile+infer+aggregate) | "
                f"{1e3 / stream['frames_per_second']:.2f} | | "
                f"{stream['frames_per_second']:.1f} | |"
            )
    lines += ["", "## Ratios measured side by side (ONNX Runtime FP32 vs torch eager, p50)", ""]
    for row in results["cases"]:
        b = row["backends"]
        if "torch eager" in b and "onnxruntime fp32" in b:
            ratio = b["torch eager"]["ms_per_frame_p50"] / b["onnxruntime fp32"]["ms_per_frame_p50"]
            lines.append(f"- {row['case']}: {ratio:.2f}x")
    lines += ["", "## The papers' figures (their hardware, not this machine)", ""]
    for row in results["cases"]:
        for paper in row["papers"]:
            ours = row["backends"].get("onnxruntime fp32", {}).get("ms_per_frame_p50")
            lines.append(
                f"- {paper['what']}: {paper['ms']} ms per image on {paper['hardware']}; "
                f"ours ({row['case']}, ONNX Runtime FP32, this CPU): {ours:.2f} ms"
            )
    lines += [
        "",
        "CBiGAN, DDR-ID and IGD report no timings. FP16 on a CPU is a validation path (ONNX "
        "Runtime upcasts), not a speed path. TensorRT: not measured (no GPU on this machine).",
        "",
        f"![per-frame latency vs papers]({out.name}.png)",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, ours, theirs = [], [], []
    for row in results["cases"]:
        fp32 = row["backends"].get("onnxruntime fp32")
        eager = row["backends"].get("torch eager")
        labels.append(row["case"].replace(" (64 tiles)", "\n(64 tiles)"))
        ours.append(tuple(m["ms_per_frame_p50"] if m else np.nan for m in (fp32, eager)))
        theirs.append(row["papers"][0]["ms"] if row["papers"] else np.nan)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.bar(x - 0.27, [o[0] for o in ours], 0.27, label="adedge ONNX Runtime FP32 (this CPU)")
    ax.bar(x, [o[1] for o in ours], 0.27, label="torch eager, pruned (this CPU)")
    ax.bar(x + 0.27, theirs, 0.27, label="paper's per-image time (its GPU)")
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms per frame (batch 1)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/papers"))
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement")
    parser.add_argument("--cases", default="", help="substring filter on case names")
    parser.add_argument(
        "--threads", type=int, default=1, help="threads for torch, ONNX Runtime and the sgemm"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    global THREADS
    THREADS = args.threads
    torch.set_num_threads(THREADS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    peak = sgemm_gflops()
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        "sgemm_gflops": peak,
        "command": "python benchmarks/papers.py "
        + " ".join(
            f"--{k} {v}" for k, v in (("seconds", args.seconds), ("cases", args.cases)) if v
        ),
        "cases": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            if args.cases and args.cases not in case.name:
                continue
            folder = Path(tmp) / case.name.replace(" ", "_")
            folder.mkdir()
            print(f"case {case.name}", flush=True)
            results["cases"].append(run_case(case, folder, args.seconds, peak))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    write_markdown(results, args.out)
    plot(results, args.out)
    print(render_table(results))


if __name__ == "__main__":
    main()
