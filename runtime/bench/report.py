"""The report of `adedge bench --papers`: a terminal table, markdown beside the papers'
figures, a latency plot and a roofline plot (matplotlib, imported when they are drawn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from adedge.runtime.bench.papers import BATCHES, FULL, MAX_ROWS, PRUNED


def label(backend: str) -> str:
    return backend.replace(":", " ")


def gflops(row: dict[str, Any], backend: str) -> float:
    """GFLOP per frame of what ``backend`` runs: the full model or the pruned graph."""
    return row["full_model_gflops_per_frame" if backend == FULL else "gflops_per_frame"]


def roofs_line(results: dict[str, Any]) -> str:
    roofs = results["roofs"]
    return (
        f"FP32 sgemm {roofs['fp32_gflops']:.1f} GFLOP/s, INT8 GEMM "
        f"{roofs['int8_gops']:.1f} GOP/s, memory {roofs['memory_gbs']:.1f} GB/s"
    )


def render_table(results: dict[str, Any]) -> str:
    """The terminal table: one line per case and backend, plus the stream."""
    lines = [
        f"machine: {results['machine']}; roofs: {roofs_line(results)}",
        f"{'case':44} {'GFLOP':>7} {'backend':24} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'best fps':>9} {'roof %':>7}",
    ]
    for row in results["cases"]:
        for backend, m in row["backends"].items():
            lines.append(
                f"{row['case'][:44]:44} {gflops(row, backend):>7.3f} {label(backend):24} "
                f"{m['ms_per_frame_p50']:>8.2f} {m['ms_per_frame_p95']:>8.2f} "
                f"{m['best_frames_per_second']:>9.1f} {100 * m['fraction_of_roof']:>6.1f}%"
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
        f"Machine: {results['machine']}. Roofs measured in the same run: "
        f"{roofs_line(results)}. Command: `{results['command']}`.",
        "",
        "Per frame, batch 1 (a tiled frame is one batch of its tiles); best throughput over "
        f"batches of {', '.join(map(str, BATCHES))} frames (at most {MAX_ROWS} network inputs "
        "per call). Weights are the paper preset's random initialisation: speed does not "
        "depend on them. *Full model*: the whole trained model as the authors' test pass runs "
        "it (what their timings cover); *pruned*: the inference subgraph that export traces. "
        "*% of roof*: GFLOP/s reached at the best batch over the graph's roof, the lower of "
        "its precision's compute peak (FP32 sgemm; INT8 GEMM for INT8 graphs) and memory "
        "bandwidth x FLOP per byte moved (bytes estimated from the graph ONNX Runtime runs, "
        "each tensor written and read once: no cache); *bound* says which. The torch full "
        "model has no byte count and is measured against the FP32 peak.",
        "",
        "| case | GFLOP/frame | backend | p50 ms | p95 ms | best frames/s | FLOP/byte | "
        "% of roof (bound) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["cases"]:
        for backend, m in row["backends"].items():
            per_byte = m.get("flops_per_byte")
            lines.append(
                f"| {row['case']} | {gflops(row, backend):.3f} | {label(backend)} | "
                f"{m['ms_per_frame_p50']:.2f} | {m['ms_per_frame_p95']:.2f} | "
                f"{m['best_frames_per_second']:.1f} (batch {m['best_batch_frames']}) | "
                f"{'' if per_byte is None else f'{per_byte:.1f}'} | "
                f"{100 * m['fraction_of_roof']:.1f} ({m['bound']}) |"
            )
        stream = row["stream_vtest"]
        if stream:
            lines.append(
                f"| {row['case']} | | stream on vtest.avi (decode+tile+infer+aggregate) | "
                f"{1e3 / stream['frames_per_second']:.2f} | | "
                f"{stream['frames_per_second']:.1f} | | |"
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
    lines += fusion_lines(results)
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
        "",
        f"![roofline]({stem}-roofline.png)",
    ]
    return "\n".join(lines) + "\n"


def fusion_lines(results: dict[str, Any]) -> list[str]:
    """The INT8 graphs' convolutions that ONNX Runtime runs as integer kernels."""
    rows = [
        (row["case"], stage, fusion)
        for row in results["cases"]
        for stage, fusion in row.get("int8_fusion", {}).items()
    ]
    if not rows:
        return []
    lines = [
        "",
        "## INT8 convolutions ONNX Runtime fuses into integer kernels",
        "",
        "Counted in the graph ONNX Runtime optimises (`optimized_model_filepath`). Layers "
        "writing fewer than 8 channels, the score's FP32 islands with the layers feeding them, "
        "and ConvTranspose stay FP32 by design (`adedge.export.int8_layers`).",
        "",
        "| case | stage | convolutions | quantised | fused (integer kernels) |",
        "|---|---|---|---|---|",
    ]
    for case, stage, f in rows:
        lines.append(
            f"| {case} | {stage} | {f['convolutions']} | {f['quantised_convolutions']} | "
            f"{f['fused_convolutions']} |"
        )
    return lines


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
    save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as a PNG written whole (temporary name, then rename), with
    the umask's permissions."""
    import matplotlib.pyplot as plt

    from adedge.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(path) as partial:
        fig.savefig(partial, dpi=110, format="png")
    plt.close(fig)


def write_report(results: dict[str, Any], out: Path) -> list[Path]:
    """``out``.json, .md, .png and -roofline.png, each written whole (temporary name, then
    rename)."""
    from adedge.atomic import write_json, write_text
    from adedge.runtime.bench.roofline_plot import plot_roofline

    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (out.with_suffix(s) for s in (".json", ".md", ".png"))
    roofline_path = out.with_name(f"{out.name}-roofline.png")
    write_json(json_path, results)
    write_text(md_path, markdown(results, out.name))
    plot(results, png_path)
    plot_roofline(results, roofline_path)
    return [json_path, md_path, png_path, roofline_path]
