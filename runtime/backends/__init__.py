"""Inference backends: each runs one ONNX stage of a bundle on a float32 NCHW batch."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from adedge.bundle import StageSpec
from adedge.errors import AdedgeError

BACKENDS = ("onnxruntime",)


class Backend(Protocol):
    name: str

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """float32 (N, C, H, W) -> named outputs, each with N in its first axis."""
        ...


def create_backend(name: str, onnx_path: Path, stage: StageSpec, threads: int = 0) -> Backend:
    if name == "onnxruntime":
        from adedge.runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_path, stage, threads=threads)
    raise AdedgeError(f"unknown backend '{name}'", f"choose one of: {', '.join(BACKENDS)}")
