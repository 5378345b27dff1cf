"""The roofline plot of `adedge bench --papers`: each case's graphs at their arithmetic
intensity (FLOP per byte moved) and the rate they reach, under the roofs measured in the
same run (FP32 sgemm, INT8 GEMM, memory bandwidth x intensity). Log-log axes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from adedge.runtime.bench.report import label, save_figure

MARKERS = {"onnxruntime:fp32": "o", "onnxruntime:fp16": "s", "onnxruntime:int8": "^"}


def plot_roofline(results: dict[str, Any], path: Path) -> None:
    """Points: ONNX Runtime's graphs of every case (torch rows have no byte count)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roofs = results["roofs"]
    points = [
        (row["case"], backend, m["flops_per_byte"], m["gflops_per_second"])
        for row in results["cases"]
        for backend, m in row["backends"].items()
        if backend in MARKERS and m.get("flops_per_byte")
    ]
    fig, ax = plt.subplots(figsize=(10, 6))
    spread = [p[2] for p in points] or [1.0]
    x = np.logspace(np.log10(min(spread) / 4), np.log10(max(spread) * 4), 200)
    memory = roofs["memory_gbs"] * x
    ax.plot(x, np.minimum(memory, roofs["fp32_gflops"]), "k-", lw=1.5, label="FP32 roof")
    ax.plot(x, np.minimum(memory, roofs["int8_gops"]), "k--", lw=1.2, label="INT8 roof")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    cases = list(dict.fromkeys(p[0] for p in points))
    for case, backend, per_byte, rate in points:
        colour = colours[cases.index(case) % len(colours)]
        ax.scatter(per_byte, rate, marker=MARKERS[backend], color=colour, s=45, zorder=3)
    for index, case in enumerate(cases):  # one legend entry per case (colour)
        ax.scatter([], [], color=colours[index % len(colours)], label=case)
    for backend, marker in MARKERS.items():  # and per backend (marker)
        ax.scatter([], [], marker=marker, color="grey", label=label(backend))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOP per byte moved (estimated from the graph ONNX Runtime runs, no cache)")
    ax.set_ylabel("GFLOP/s (INT8: GOP/s) at the best batch")
    ax.set_title(
        f"{results['machine']}\nmemory {roofs['memory_gbs']:.0f} GB/s, FP32 sgemm "
        f"{roofs['fp32_gflops']:.0f} GFLOP/s, INT8 GEMM {roofs['int8_gops']:.0f} GOP/s",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, path)
