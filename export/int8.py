"""INT8 graphs for CPU edge boxes: ONNX Runtime static quantisation, QDQ format.

``adedge export --int8`` writes ``<stage>.int8.onnx`` beside the FP32 graph, run with
``--backend onnxruntime:int8``. Choices:

* static quantisation (activation ranges calibrated once) rather than dynamic: dynamic
  quantisation re-measures activations per call and only covers MatMul/Gemm well, while
  these detectors are convolutional;
* QDQ format (QuantizeLinear/DequantizeLinear pairs around FP32 ops), signed INT8
  activations and weights, per-channel weight scales: ONNX Runtime's recommended default
  for x86 and ARM CPUs, and the format TensorRT also reads;
* the calibration reader feeds *normal training images* (prepared exactly as the stage
  sees them, tiles for a tiled stage): the ranges a deployment meets on normal frames;
  MinMax ranges (a percentile variant is available but clipped ranges saturate exactly the
  anomalous activations a detector must see);
* the FP32 islands of ``adedge.export.fp16_policy`` (reductions, softmax/exp, the score math after
  the networks, MS-SSIM statistics) are excluded, and so is each network's last layer that
  feeds them (``float_nodes``): the score reads float logits and reconstructions.

The export (``adedge.export.precision_graphs``) reports Spearman rho, max |Δ| and the test
AUROC against FP32, and refuses to write an INT8 graph whose test AUROC (through the
runtime, where the data has a labelled test split) drops by more than
``Int8Options.max_auroc_drop`` (default ``MAX_AUROC_DROP``, 0.01): ``check_int8_auroc``. A
gain is reported, not refused.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from adedge.errors import ExportError
from adedge.export.fp16_policy import HEAVY_OPS, fp32_island_nodes, name_nodes
from adedge.export.parity import MAX_AUROC_DROP, check_auroc_drop
from adedge.metrics import auroc

CALIBRATION_IMAGES = 256
CALIBRATION_BATCH = 32
CALIBRATION_METHODS = ("minmax", "percentile")


@dataclass(frozen=True)
class Int8Options:
    calibration_images: int = CALIBRATION_IMAGES
    method: str = "minmax"
    per_channel: bool = True
    max_auroc_drop: float = MAX_AUROC_DROP  # refuse the graph if test AUROC drops more


@dataclass
class Int8Report:
    calibration_inputs: int
    quantized_nodes: int
    excluded_nodes: int
    method: str

    def to_dict(self) -> dict[str, object]:
        return {
            "calibration_inputs": self.calibration_inputs,
            "calibration_method": self.method,
            "quantized_nodes": self.quantized_nodes,
            "fp32_island_nodes_excluded": self.excluded_nodes,
            "format": "QDQ, signed INT8 activations and per-channel weights",
        }


def _reader_class():
    from onnxruntime.quantization import CalibrationDataReader

    class ArrayReader(CalibrationDataReader):
        """Feeds calibration inputs in batches under the graph's input name."""

        def __init__(self, name: str, inputs: np.ndarray, batch: int) -> None:
            self.name, self.inputs, self.batch = name, inputs, batch
            self.rewind()

        def rewind(self) -> None:
            self._batches: Iterator[np.ndarray] = (
                self.inputs[i : i + self.batch] for i in range(0, len(self.inputs), self.batch)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            part = next(self._batches, None)
            return None if part is None else {self.name: np.ascontiguousarray(part)}

    return ArrayReader


def calibration_reader(name: str, inputs: np.ndarray, batch: int = CALIBRATION_BATCH):
    """An ONNX Runtime CalibrationDataReader over ``inputs`` (float32 NCHW)."""
    return _reader_class()(name, np.asarray(inputs, dtype=np.float32), batch)


def quantize_int8(
    source: Path,
    target: Path,
    input_name: str,
    calibration: np.ndarray,
    options: Int8Options = Int8Options(),
) -> Int8Report:
    """Write the static INT8 (QDQ) graph of the FP32 graph ``source`` to ``target``."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if options.method not in CALIBRATION_METHODS:
        raise ExportError(
            f"unknown INT8 calibration method '{options.method}'",
            f"choose one of: {', '.join(CALIBRATION_METHODS)}",
        )
    if len(calibration) == 0:
        raise ExportError(
            "INT8 calibration needs normal training images and got none",
            "export from a run whose data has a training split",
        )
    model = onnx.load(str(source))
    name_nodes(model.graph)
    excluded = float_nodes(model)
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser logs every tensor
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # and prints its histograms
            quantize_static(
                model,
                str(target),
                calibration_reader(input_name, calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=options.per_channel,
                calibrate_method=method[options.method],
                nodes_to_exclude=excluded,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
    finally:
        logging.getLogger().setLevel(quiet)
    quantized = onnx.load(str(target))
    count = sum(node.op_type == "QuantizeLinear" for node in quantized.graph.node)
    return Int8Report(len(calibration), count, len(excluded), options.method)


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes INT8 leaves in float: the FP32 islands, and the layers whose results they
    read, back to and including the last heavy op (Conv, Gemm...) on each path. Quantising
    that last layer would hand the score math 8-bit logits or reconstructions."""
    islands = fp32_island_nodes(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    excluded = dict.fromkeys(islands)
    pending = [name for node in model.graph.node if node.name in excluded for name in node.input]
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.name in excluded:
            continue
        excluded[node.name] = None
        if node.op_type not in HEAVY_OPS:
            pending.extend(node.input)
    return list(excluded)


def check_int8_auroc(
    method: str,
    labels: np.ndarray,
    fp32_scores: np.ndarray,
    int8_scores: np.ndarray,
    options: Int8Options = Int8Options(),
) -> tuple[float, float]:
    """The FP32 and INT8 test AUROCs of the same labelled images; refuses (``ExportError``)
    an INT8 graph that loses more than ``options.max_auroc_drop``."""
    fp32, int8 = auroc(labels, fp32_scores), auroc(labels, int8_scores)
    check_auroc_drop(method, fp32, int8, options.max_auroc_drop)
    return fp32, int8
