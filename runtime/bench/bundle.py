"""`adedge bench`: latency and throughput of a bundle's graphs on this machine's backend, or
of a Triton server's model (``--backend triton://...``: the client's whole round trip).

Inputs are the card's own shapes filled with noise: speed does not depend on pixel values.
The paper's per-image time (its hardware, its batch) is shown beside ours, not as a goal:
export writes it into the card (``training.paper_ms_per_image``); older cards have none.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import numpy as np

from adedge.runtime.bench.timing import machine, time_call
from adedge.runtime.detector import Detector, run_chunked
from adedge.triton_address import is_triton


def bench_bundle(
    model: str | os.PathLike[str] | None,
    batches: list[int],
    seconds: float = 2.0,
    threads: int = 0,
    backend_name: str = "onnxruntime",
) -> dict[str, Any]:
    """Each stage's graph timed alone on random batches of each size (a Triton model: the
    round trip to the server, in requests of its ``max_batch_size``; ``model`` None)."""
    detector = Detector(model, backend=backend_name, threads=threads)
    try:
        rows = _time_stages(detector, batches, seconds)
    finally:
        detector.close()
    card = detector.card
    return {
        "model": str(detector.bundle.path),
        "method": card.method,
        "backend": f"{backend_name} ({_where(backend_name)})",
        "machine": machine(),
        "rows": rows,
        "paper_ms_per_image": paper_times(card.training),
    }


def _where(backend_name: str) -> str:
    if is_triton(backend_name):
        return "Triton server"
    return "CPU" if backend_name.startswith("onnxruntime") else "NVIDIA GPU"


def _time_stages(detector: Detector, batches: list[int], seconds: float) -> list[dict[str, Any]]:
    rows = []
    for stage in detector.stages:
        spec = stage.spec.input
        names = list(stage.spec.outputs)
        rng = np.random.default_rng(0)
        for size in batches:
            batch = rng.standard_normal((size, spec.channels, spec.height, spec.width))
            batch = batch.astype(np.float32)
            times = time_call(partial(run_chunked, stage.backend, batch, names), seconds)
            rows.append(
                {
                    "stage": stage.spec.name,
                    "input": f"{spec.height}x{spec.width}x{spec.channels}",
                    "batch": size,
                    "runs": len(times),
                    "ms_per_batch_p50": float(np.median(times) * 1e3),
                    "ms_per_batch_p95": float(np.quantile(times, 0.95) * 1e3),
                    "ms_per_image": float(np.median(times) * 1e3 / size),
                    "images_per_second": float(size / np.median(times)),
                }
            )
    return rows


def paper_times(training: dict[str, Any]) -> dict[str, float] | None:
    """The card's paper times (label -> ms); None where it has none or they are not numbers."""
    times = training.get("paper_ms_per_image") if isinstance(training, dict) else None
    if not isinstance(times, dict) or not times:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in times.values()):
        return None
    return {str(label): float(ms) for label, ms in times.items()}


def render(result: dict[str, Any]) -> str:
    lines = [
        f"{result['method']} bundle {result['model']} on {result['backend']}, {result['machine']}",
        f"{'stage':8} {'input':>10} {'batch':>5} {'ms/batch p50':>13} {'p95':>8} "
        f"{'ms/image':>9} {'images/s':>9}",
    ]
    for row in result["rows"]:
        lines.append(
            f"{row['stage']:8} {row['input']:>10} {row['batch']:>5} "
            f"{row['ms_per_batch_p50']:>13.3f} {row['ms_per_batch_p95']:>8.3f} "
            f"{row['ms_per_image']:>9.3f} {row['images_per_second']:>9.1f}"
        )
    paper = result.get("paper_ms_per_image")
    if paper:
        quoted = ", ".join(f"{k}: {v} ms" for k, v in paper.items())
        lines.append(f"paper's reported per-image time (its GPU, full test pass): {quoted}")
    return "\n".join(lines)
