"""The CPU texture path before and after issue 22, side by side in one run.

Before: ONNX Runtime's default layout (NCHWc) for every graph, and the INT8 quantiser as it
was (signed activations, biases shared as the exporter wrote them, every layer outside the
FP32 islands quantised, ConvTranspose too). After: the card's ``nchwc`` choice
(``adedge.export.cpu_layout``) and the quantiser of ``adedge.export.int8``. Measured:

1. CBiGAN's 512x512 texture frame (64 tiles of 64 px, one call): FP32 and INT8, before and
   after, on 1 and 2 threads; 2 frames in flight on 1 thread each; tiles per call;
   GFLOP/s against the roofs measured in the same run;
2. every method's graph at the papers' sizes: FP32 and INT8 before and after, 1 thread,
   and how many INT8 convolutions ONNX Runtime fuses before and after;
3. ``vtest.avi`` through the texture bundle (decode, tile, infer, max over tiles): before
   and after, FP32 and INT8.

Weights are the paper presets' random initialisation (speed does not depend on them):

    python benchmarks/cpu_texture.py [--seconds 3] [--out benchmarks/results/cpu_texture]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

import adedge.export.int8 as int8_module
from adedge.bundle import CARD_NAME, load_bundle
from adedge.export.int8 import Int8Options, quantize_int8
from adedge.export.paper_cases import build_case
from adedge.export.trace import INPUT_NAME
from adedge.paths import find_vtest
from adedge.runtime.bench.flops import traffic_bytes
from adedge.runtime.bench.papers import CASES, stream_fps
from adedge.runtime.bench.roofline import Roofs, measure_roofs
from adedge.runtime.bench.timing import machine, time_call

ROOT = Path(__file__).resolve().parents[1]
TEXTURE = "cbigan 512x512 rgb texture (64 tiles)"
ROUNDS = 3  # the texture rows: median over rounds
LEGACY = Int8Options(activations="int8", min_channels=0)  # with the two patches below


@contextlib.contextmanager
def legacy_quantiser() -> Iterator[None]:
    """The quantiser before issue 22: no bias split, ConvTranspose quantised too."""
    split, unfused = int8_module.split_shared_biases, int8_module.unfused_nodes
    int8_module.split_shared_biases = lambda model: 0
    int8_module.unfused_nodes = lambda model: []
    try:
        yield
    finally:
        int8_module.split_shared_biases, int8_module.unfused_nodes = split, unfused


def session(path: Path, threads: int, nchwc: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    disabled = [] if nchwc else ["NchwcTransformer"]
    return ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
    )


def batch_of(path: Path, rows: int) -> np.ndarray:
    shape = session(path, 1, True).get_inputs()[0].shape[1:]
    return np.random.default_rng(0).uniform(-1, 1, (rows, *shape)).astype(np.float32)


def ms_per_call(run: Callable[[], object], seconds: float) -> float:
    return float(np.median(time_call(run, seconds))) * 1e3


def ms_per_batch(graph: Path, threads: int, nchwc: bool, batch: np.ndarray, seconds: float):
    """Median ms of one call scoring ``batch`` in a fresh session."""
    scorer = session(graph, threads, nchwc)
    return ms_per_call(lambda: scorer.run(None, {INPUT_NAME: batch}), seconds)


def in_flight(path: Path, batch: np.ndarray, nchwc: bool, seconds: float) -> float:
    """Frames/s with 2 frames in flight, one session of 1 thread each."""
    sessions = [session(path, 1, nchwc) for _ in range(2)]
    for s in sessions:
        s.run(None, {INPUT_NAME: batch})
    counts = [0, 0]
    stop = time.perf_counter() + seconds

    def work(index: int) -> None:
        while time.perf_counter() < stop:
            sessions[index].run(None, {INPUT_NAME: batch})
            counts[index] += 1

    start = time.perf_counter()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - start)


FLOAT_CONVS = ("Conv", "FusedConv", "ConvTranspose")
INTEGER_CONVS = ("QLinearConv",)


def where_time_goes(graph: Path, nchwc: bool, batch: np.ndarray, runs: int = 5) -> dict:
    """ONNX Runtime's own profile of one graph (1 thread): ms per call in FP32 convolutions,
    integer convolutions and every other op."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "profile")
        scorer = ort.InferenceSession(
            str(graph),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=[] if nchwc else ["NchwcTransformer"],
        )
        for _ in range(runs):
            scorer.run(None, {INPUT_NAME: batch})
        events = json.loads(Path(scorer.end_profiling()).read_text())
    spent = {"fp32_convolutions": 0.0, "integer_convolutions": 0.0, "other_ops": 0.0}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        op = event["args"]["op_name"]
        key = (
            "fp32_convolutions"
            if op in FLOAT_CONVS
            else "integer_convolutions"
            if op in INTEGER_CONVS
            else "other_ops"
        )
        spent[key] += event["dur"] / 1e3 / runs
    return spent


def quantise(fp32: Path, target: Path, legacy: bool) -> dict[str, int]:
    shape = session(fp32, 1, True).get_inputs()[0].shape[1:]
    calibration = np.random.default_rng(1).uniform(-1, 1, (32, *shape)).astype(np.float32)
    with legacy_quantiser() if legacy else contextlib.nullcontext():
        options = LEGACY if legacy else Int8Options()
        return quantize_int8(fp32, target, INPUT_NAME, calibration, options).fusion.to_dict()


def texture_part(folder: Path, seconds: float) -> dict:
    folder.mkdir(parents=True)
    case = next(c for c in CASES if c.name == TEXTURE)
    (stage,) = build_case(case, folder)
    fp32 = folder / stage.spec.file
    new8, old8 = fp32.with_suffix(".int8.onnx"), fp32.with_suffix(".legacy.int8.onnx")
    fusion = {"after": quantise(fp32, new8, False), "before": quantise(fp32, old8, True)}
    batch = batch_of(fp32, stage.tiles)
    variants = {  # name -> (graph, nchwc)
        "FP32 before (NCHWc)": (fp32, True),
        "FP32 after (card: no NCHWc)": (fp32, stage.spec.nchwc),
        "INT8 before (old quantiser, NCHWc)": (old8, True),
        "INT8 after (new quantiser, card layout)": (new8, stage.spec.nchwc),
    }
    measured: dict[str, list[float]] = {}
    for round_ in range(ROUNDS):  # variants interleaved, so a noisy spell hits them all
        for threads in (1, 2):
            for name, (graph, nchwc) in variants.items():
                ms = ms_per_batch(graph, threads, nchwc, batch, seconds)
                measured.setdefault(f"{name}, {threads} thread(s)", []).append(ms)
        for name, (graph, nchwc) in variants.items():
            fps = in_flight(graph, batch, nchwc, seconds)
            measured.setdefault(f"{name}, 2 frames in flight x 1 thread", []).append(1e3 / fps)
        print(f"  round {round_ + 1} of {ROUNDS} done", flush=True)
    rows = {
        name: {
            "ms_per_frame": float(np.median(values)),
            "rounds": values,
            "threads": 1 if name.endswith("1 thread(s)") else 2,
        }
        for name, values in measured.items()
    }
    profiles = {
        "FP32 after": where_time_goes(fp32, stage.spec.nchwc, batch),
        "INT8 after": where_time_goes(new8, stage.spec.nchwc, batch),
    }
    chunks = {}
    after = session(fp32, 1, stage.spec.nchwc)
    for tiles in (1, 8, 64):
        parts = [batch[i : i + tiles] for i in range(0, len(batch), tiles)]
        calls = lambda parts=parts: [after.run(None, {INPUT_NAME: p}) for p in parts]  # noqa: E731
        chunks[tiles] = ms_per_call(calls, seconds)
    spec = stage.spec.input
    return {
        "nchwc": stage.spec.nchwc,
        "gflop_per_frame": stage.flops_per_input * stage.tiles / 1e9,
        "bytes_per_frame": {
            "fp32": traffic_bytes(fp32, spec) * stage.tiles,
            "int8_before": traffic_bytes(old8, spec) * stage.tiles,
            "int8_after": traffic_bytes(new8, spec) * stage.tiles,
        },
        "fusion": fusion,
        "rows": rows,
        "profiles": profiles,
        "fp32_after_ms_by_tiles_per_call": chunks,
        "folder": folder,
    }


def methods_part(root: Path, seconds: float) -> dict:
    """Every method's graph (one per method and stage mode): FP32 (card layout) and INT8
    before and after, 1 thread, one network input per call (a tiled stage: its tiles)."""
    rows = {}
    seen = set()
    for case in CASES:
        folder = root / case.name.split(" ")[0] / case.name.replace(" ", "_")
        folder.mkdir(parents=True)
        for stage in build_case(case, folder):
            key = (case.method, stage.name)
            if key in seen:
                continue
            seen.add(key)
            fp32 = folder / stage.spec.file
            new8, old8 = fp32.with_suffix(".int8.onnx"), fp32.with_suffix(".legacy.int8.onnx")
            fusion = {"after": quantise(fp32, new8, False), "before": quantise(fp32, old8, True)}
            batch = batch_of(fp32, stage.tiles)
            times = {}
            for name, graph, nchwc in (
                ("fp32_before", fp32, True),
                ("fp32_after", fp32, stage.spec.nchwc),
                ("int8_before", old8, True),
                ("int8_after", new8, stage.spec.nchwc),
            ):
                times[name] = ms_per_batch(graph, 1, nchwc, batch, seconds)
            label = f"{case.name.split(' (')[0]}: {stage.name}"
            rows[label] = {"ms": times, "fusion": fusion, "rows": stage.tiles}
            print(f"  {label}: {times}", flush=True)
    return rows


def stream_part(folder: Path, seconds: float) -> dict:
    """vtest.avi through the texture bundle: the card as exported (after) and with its
    ``nchwc`` removed (before: the default layout), FP32 and INT8, 1 thread."""
    video = find_vtest()
    if video is None:
        return {}
    card_path = folder / CARD_NAME
    after_card = card_path.read_text()
    before = json.loads(after_card)
    for entry in before["stages"].values():
        entry.pop("nchwc", None)
    results = {}
    for layout, text in (("after", after_card), ("before", json.dumps(before))):
        card_path.write_text(text)
        assert load_bundle(folder).card.stages[0].nchwc is (layout == "before")
        for backend in ("onnxruntime", "onnxruntime:int8"):
            stream = stream_fps(folder, video, 1, seconds * 3, backend=backend)
            results[f"{backend} {layout}"] = stream
            print(f"  stream {backend} {layout}: {stream['frames_per_second']:.1f} frames/s")
    card_path.write_text(after_card)
    return results


def texture_lines(results: dict) -> list[str]:
    texture, roofs = results["texture"], results["roofs"]
    flops = texture["gflop_per_frame"]
    moved = texture["bytes_per_frame"]
    rows = texture["rows"]
    lines = [
        "## CBiGAN, 512x512 texture frame (64 tiles of 64 px, one call per frame)",
        "",
        f"{flops:.3f} GFLOP per frame; bytes moved per frame (estimated, no cache): FP32 "
        f"{moved['fp32'] / 1e6:.0f} MB, INT8 before {moved['int8_before'] / 1e6:.0f} MB, "
        f"INT8 after {moved['int8_after'] / 1e6:.0f} MB. The card says nchwc: "
        f"{str(texture['nchwc']).lower()}.",
        "",
        f"Median over {ROUNDS} rounds (variants interleaved in each round).",
        "",
        "| variant | ms per frame | frames/s | vs FP32 before (same threads) | GFLOP/s | "
        "% of roof (bound) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        threads = row["threads"]
        baseline = rows[f"FP32 before (NCHWc), {threads} thread(s)"]["ms_per_frame"]
        int8 = name.startswith("INT8")
        key = "fp32" if not int8 else ("int8_after" if "after" in name else "int8_before")
        per_byte = flops * 1e9 / moved[key]
        machine_roofs = Roofs(**roofs[str(threads)] if str(threads) in roofs else roofs[threads])
        precision = "int8" if int8 else "fp32"
        ceiling = machine_roofs.roof(precision, per_byte)
        bound = machine_roofs.bound(precision, per_byte)
        rate = flops * 1e3 / row["ms_per_frame"]
        lines.append(
            f"| {name} | {row['ms_per_frame']:.2f} | {1e3 / row['ms_per_frame']:.1f} | "
            f"{baseline / row['ms_per_frame']:.2f}x | {rate:.1f} | "
            f"{100 * rate / ceiling:.0f} ({bound}) |"
        )
    fusion = texture["fusion"]
    chunks = texture["fp32_after_ms_by_tiles_per_call"]
    lines += [
        "",
        "INT8 convolutions ONNX Runtime runs as integer kernels (of "
        f"{fusion['after']['convolutions']}): before {fusion['before']['fused_convolutions']} "
        f"of {fusion['before']['quantised_convolutions']} quantised; after "
        f"{fusion['after']['fused_convolutions']} of {fusion['after']['quantised_convolutions']} "
        "quantised (layers writing < 8 channels stay FP32).",
        "",
        "FP32 after, 1 thread, tiles per call (ms per frame): "
        + ", ".join(f"{tiles}: {ms:.2f}" for tiles, ms in chunks.items()),
        "",
        "Where the time goes (ONNX Runtime's profile, 1 thread, ms per frame; in the INT8 "
        "graph every FP32 convolution is a layer writing < 8 channels):",
        "",
        "| graph | FP32 convolutions | integer convolutions | other ops |",
        "|---|---|---|---|",
    ]
    for name, spent in texture["profiles"].items():
        lines.append(
            f"| {name} | {spent['fp32_convolutions']:.1f} | "
            f"{spent['integer_convolutions']:.1f} | {spent['other_ops']:.1f} |"
        )
    return lines


def methods_lines(results: dict) -> list[str]:
    lines = [
        "",
        "## Every method's graph: FP32 and INT8, before and after (1 thread, ms per call)",
        "",
        "One call is one network input, or a tiled stage's tiles of one frame (rows).",
        "",
        "| graph | rows | FP32 before | FP32 after | INT8 before | INT8 after | "
        "FP32 after / INT8 after | fused convs before | fused convs after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["methods"].items():
        ms, fusion = row["ms"], row["fusion"]

        def fused(part: dict) -> str:
            return f"{part['fused_convolutions']} of {part['quantised_convolutions']}"

        lines.append(
            f"| {name} | {row['rows']} | {ms['fp32_before']:.2f} | {ms['fp32_after']:.2f} | "
            f"{ms['int8_before']:.2f} | {ms['int8_after']:.2f} | "
            f"{ms['fp32_after'] / ms['int8_after']:.2f}x | {fused(fusion['before'])} | "
            f"{fused(fusion['after'])} |"
        )
    return lines


def stream_lines(results: dict) -> list[str]:
    stream = results["stream_vtest"]
    if not stream:
        return ["", "vtest.avi not found: no stream rows."]
    lines = [
        "",
        "## vtest.avi through the texture bundle (decode, tile, infer, max over tiles)",
        "",
        "1 thread; *before*: the card without `nchwc` (ONNX Runtime's default layout).",
        "",
        "| backend | before frames/s | after frames/s | after / before |",
        "|---|---|---|---|",
    ]
    for backend in ("onnxruntime", "onnxruntime:int8"):
        before = stream[f"{backend} before"]["frames_per_second"]
        after = stream[f"{backend} after"]["frames_per_second"]
        lines.append(f"| {backend} | {before:.1f} | {after:.1f} | {after / before:.2f}x |")
    return lines


def markdown(results: dict) -> str:
    roofs = results["roofs"]
    roof_text = "; ".join(
        f"{threads} thread(s): FP32 sgemm {r['fp32_gflops']:.0f} GFLOP/s, INT8 GEMM "
        f"{r['int8_gops']:.0f} GOP/s, memory {r['memory_gbs']:.1f} GB/s"
        for threads, r in roofs.items()
    )
    lines = [
        "# The CPU texture path before and after issue 22",
        "",
        f"Machine: {results['machine']}, ONNX Runtime {results['onnxruntime']}. Command: "
        f"`{results['command']}` (all rows in one run). Roofs measured in the same run: "
        f"{roof_text}.",
        "",
        "*Before*: ONNX Runtime's default NCHWc layout, and the INT8 quantiser as it was "
        "(signed activations, biases shared as exported, every layer quantised). *After*: "
        "the card's `nchwc` (export's choice) and today's quantiser (unsigned activations, a "
        "bias per layer, layers writing < 8 channels in FP32). Paper-preset random weights.",
        "",
        *texture_lines(results),
        *methods_lines(results),
        *stream_lines(results),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cpu_texture")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "machine": machine(),
            "onnxruntime": ort.__version__,
            "command": "python benchmarks/cpu_texture.py"
            + (f" --seconds {args.seconds:g}" if args.seconds != 3.0 else ""),
        }
        results["roofs"] = {t: vars(measure_roofs(t)) for t in (1, 2)}
        print("texture frame", flush=True)
        texture = texture_part(Path(tmp) / "texture", args.seconds)
        results["stream_vtest"] = stream_part(texture.pop("folder"), args.seconds)
        results["texture"] = texture
        print("every method", flush=True)
        results["methods"] = methods_part(Path(tmp) / "methods", args.seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    args.out.with_suffix(".md").write_text(markdown(results))
    print(f"wrote {args.out}.json and .md")


if __name__ == "__main__":
    main()
