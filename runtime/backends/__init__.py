"""Inference backends: each runs one ONNX stage of a bundle on a float32 NCHW batch.

A backend is named ``NAME[:PRECISION]``:

* ``onnxruntime`` (the FP32 graph), ``onnxruntime:fp16`` (the mixed-precision graph that
  feeds TensorRT, on the CPU), ``onnxruntime:int8`` (the QDQ graph written by
  ``adedge export --int8``, for CPU edge boxes);
* ``tensorrt`` (an engine of the card's engine precision, FP16 unless the export said
  otherwise), ``tensorrt:fp16``, ``tensorrt:fp32``; engines are built on first use;
* ``triton://HOST:8001/MODEL`` (gRPC) or ``triton+http://HOST:8000/MODEL``: the stages run
  on a Triton server, the card comes from it (:mod:`adedge.runtime.backends.triton`; the
  Detector connects, not :func:`create_backend`).

The backends, the precisions each runs and ``--backend``'s help are one table,
:mod:`adedge.formats` (``BACKENDS``), and :func:`parse_backend` reads the name there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from adedge.bundle import StageSpec, precision_graph
from adedge.errors import AdedgeError
from adedge.formats import ALWAYS_WRITTEN, BackendKind, parse_backend


class Backend(Protocol):
    name: str

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """float32 (N, C, H, W) -> named outputs, each with N in its first axis."""
        ...


def create_backend(name: str, onnx_path: Path, stage: StageSpec, threads: int = 0) -> Backend:
    """The backend ``name`` for the stage whose FP32 graph is ``onnx_path`` (the other
    precisions' graphs and the engines sit beside it in the bundle folder)."""
    backend, precision, remote = parse_backend(name)
    if remote is not None:
        raise AdedgeError(
            f"{remote} is a Triton model, not a backend of a bundle's graph",
            "give it to Detector(None, backend=...), which reads the card from the server",
        )
    if backend is BackendKind.ONNXRUNTIME:
        from adedge.runtime.backends.onnxruntime import OnnxRuntimeBackend

        path = Path(onnx_path)
        if precision not in (None, ALWAYS_WRITTEN):
            path = precision_graph(path.parent, stage, precision)
        return OnnxRuntimeBackend(path, stage, threads=threads)
    from adedge.runtime.backends.tensorrt import TensorRTBackend

    return TensorRTBackend(Path(onnx_path).parent, stage, precision=precision)
