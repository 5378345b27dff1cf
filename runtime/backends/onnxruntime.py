"""ONNX Runtime backend (CPU by default): the one that runs everywhere.

Sessions run at ONNX Runtime's highest optimisation level; a stage whose card says
``nchwc: false`` runs without the blocked-layout pass (``NchwcTransformer``), which slows
graphs of narrow layers down (:mod:`adedge.export.cpu_layout` decides at export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from adedge.bundle import StageSpec
from adedge.errors import BundleError

NCHWC_PASS = "NchwcTransformer"  # ONNX Runtime's name for its blocked-layout rewrite


def disabled_optimizers(stage: StageSpec) -> list[str]:
    """The ONNX Runtime graph passes the stage's card turns off."""
    return [] if stage.nchwc else [NCHWC_PASS]


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: Path,
        stage: StageSpec,
        threads: int = 0,
        providers: list[str] | None = None,
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(onnx_path),
                options,
                providers=providers or ["CPUExecutionProvider"],
                disabled_optimizers=disabled_optimizers(stage),
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BundleError(
                f"ONNX Runtime cannot load {onnx_path} ({str(exc).splitlines()[0]})",
                "re-export the bundle with `adedge export`",
            ) from None
        check_graph_matches_card(self.session, stage, onnx_path)
        self.input_name = stage.input_name
        self.output_names = list(stage.outputs)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {self.input_name: batch})
        return dict(zip(self.output_names, values, strict=True))


def check_graph_matches_card(session: ort.InferenceSession, stage: StageSpec, path: Path) -> None:
    """The ONNX input must be the card's (name, channels, H, W); outputs must exist."""
    inputs = {i.name: i for i in session.get_inputs()}
    if stage.input_name not in inputs:
        raise BundleError(
            f"{path} has no input named '{stage.input_name}' (it has: {', '.join(inputs)})",
            "the card and the graph disagree: re-export the bundle",
        )
    shape = inputs[stage.input_name].shape
    expected = [stage.input.channels, stage.input.height, stage.input.width]
    if len(shape) != 4 or list(shape[1:]) != expected:
        raise BundleError(
            f"{path} input '{stage.input_name}' has shape {shape} but the card says "
            f"(N, {', '.join(map(str, expected))})",
            "the card and the graph disagree: re-export the bundle",
        )
    outputs = {o.name for o in session.get_outputs()}
    missing = [name for name in stage.outputs if name not in outputs]
    if missing:
        raise BundleError(
            f"{path} lacks the output(s) {', '.join(missing)} named in the card",
            "re-export the bundle",
        )
