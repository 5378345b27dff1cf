"""Inference backends: each runs one ONNX stage of a bundle on a float32 NCHW batch.

A backend is named ``NAME[:PRECISION]``:

* ``onnxruntime`` (the FP32 graph), ``onnxruntime:fp16`` (the mixed-precision graph that
  feeds TensorRT, on the CPU), ``onnxruntime:int8`` (the QDQ graph written by
  ``adedge export --int8``, for CPU edge boxes);
* ``tensorrt`` (an engine of the card's engine precision, FP16 unless the export said
  otherwise), ``tensorrt:fp16``, ``tensorrt:fp32``; engines are built on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from adedge.bundle import ENGINE_PRECISIONS, PRECISIONS, StageSpec, precision_graph
from adedge.errors import AdedgeError

BACKENDS = ("onnxruntime", "tensorrt")
BACKEND_CHOICES = (
    "onnxruntime",
    "onnxruntime:fp16",
    "onnxruntime:int8",
    "tensorrt",
    "tensorrt:fp16",
    "tensorrt:fp32",
)


class Backend(Protocol):
    name: str

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """float32 (N, C, H, W) -> named outputs, each with N in its first axis."""
        ...


def parse_backend(spec: str) -> tuple[str, str | None]:
    """``NAME[:PRECISION]`` -> (name, precision or None for the backend's default)."""
    name, _, precision = spec.strip().lower().partition(":")
    if name not in BACKENDS:
        raise AdedgeError(f"unknown backend '{spec}'", f"choose one of: {', '.join(BACKENDS)}")
    allowed = PRECISIONS if name == "onnxruntime" else ENGINE_PRECISIONS
    if precision and precision not in allowed:
        raise AdedgeError(
            f"backend '{name}' has no precision '{precision}'",
            f"choose one of: {', '.join(f'{name}:{p}' for p in allowed)}",
        )
    return name, precision or None


def create_backend(name: str, onnx_path: Path, stage: StageSpec, threads: int = 0) -> Backend:
    """The backend ``name`` for the stage whose FP32 graph is ``onnx_path`` (the other
    precisions' graphs and the engines sit beside it in the bundle folder)."""
    backend, precision = parse_backend(name)
    if backend == "onnxruntime":
        from adedge.runtime.backends.onnxruntime import OnnxRuntimeBackend

        path = Path(onnx_path)
        if precision not in (None, "fp32"):
            path = precision_graph(path.parent, stage, precision)
        return OnnxRuntimeBackend(path, stage, threads=threads)
    from adedge.runtime.backends.tensorrt import TensorRTBackend

    return TensorRTBackend(Path(onnx_path).parent, stage, precision=precision)
