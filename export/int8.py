"""INT8 graphs for CPU edge boxes: ONNX Runtime static quantisation, QDQ format.

``adedge export --int8`` writes ``<stage>.int8.onnx`` beside the FP32 graph, run with
``--backend onnxruntime:int8``. Choices:

* static quantisation (activation ranges calibrated once) rather than dynamic: dynamic
  quantisation re-measures activations per call and only covers MatMul/Gemm well, while
  these detectors are convolutional;
* QDQ format (QuantizeLinear/DequantizeLinear pairs around FP32 ops), per-channel
  symmetric INT8 weights and *unsigned* 8-bit asymmetric activations (U8S8). ONNX Runtime
  fuses each DQ -> Conv -> Q group into one integer ``QLinearConv``, and on x86 its kernels
  take U8 activations only: it rewrites S8 Q/DQ pairs to U8 where one Q feeds one DQ, so
  with S8 activations every convolution reading a tensor that two layers read (the graph
  input, a residual block's input, a pooled map feeding both branches) stayed unfused
  (DQ -> FP32 Conv -> Q, slower than FP32). ARM runs U8S8 as well;
* which layers stay FP32, and the bias fix that lets the others fuse:
  :mod:`adedge.export.int8_layers` (the score's FP32 islands and the layers feeding them;
  layers narrower than ``Int8Options.min_channels``, where the integer kernel is slower
  than FP32; ConvTranspose, which has no integer kernel). The report counts how many
  quantised convolutions ONNX Runtime really fuses (:mod:`adedge.runtime.bench.fusion`);
* the calibration reader feeds *normal training images* (prepared exactly as the stage
  sees them, tiles for a tiled stage): the ranges a deployment meets on normal frames;
  MinMax ranges (a percentile variant is available but clipped ranges saturate exactly the
  anomalous activations a detector must see);

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
from adedge.export.fp16_policy import name_nodes
from adedge.export.int8_layers import (
    float_nodes,
    narrow_nodes,
    split_shared_biases,
    unfused_nodes,
)
from adedge.export.parity import MAX_AUROC_DROP, check_auroc_drop
from adedge.metrics import auroc
from adedge.runtime.bench.fusion import Fusion, count_fusion

CALIBRATION_IMAGES = 256
CALIBRATION_BATCH = 32
CALIBRATION_METHODS = ("minmax", "percentile")
ACTIVATION_TYPES = ("uint8", "int8")  # the first is the default (see the module docstring)
MIN_CHANNELS = 8  # a layer writing fewer channels stays FP32


@dataclass(frozen=True)
class Int8Options:
    calibration_images: int = CALIBRATION_IMAGES
    method: str = "minmax"
    per_channel: bool = True
    activations: str = ACTIVATION_TYPES[0]
    min_channels: int = MIN_CHANNELS  # 0: quantise every layer outside the FP32 islands
    max_auroc_drop: float = MAX_AUROC_DROP  # refuse the graph if test AUROC drops more


@dataclass
class Int8Report:
    """What the quantiser did (the card's ``metrics.precision.int8`` carries it): the
    quantise nodes it wrote, the nodes it left FP32 and why, and ``fusion``: how many of its
    convolutions ONNX Runtime runs as integer kernels."""

    calibration_inputs: int
    quantized_nodes: int
    island_nodes: int
    narrow_nodes: int
    unfused_nodes: int
    options: Int8Options
    fusion: Fusion

    def to_dict(self) -> dict[str, object]:
        return {
            "calibration_inputs": self.calibration_inputs,
            "calibration_method": self.options.method,
            "quantized_nodes": self.quantized_nodes,
            "fp32_island_nodes_excluded": self.island_nodes,
            "narrow_nodes_fp32": self.narrow_nodes,
            "min_channels": self.options.min_channels,
            "conv_transpose_fp32": self.unfused_nodes,
            "fusion": self.fusion.to_dict(),
            "format": f"QDQ, {self.options.activations} activations, "
            f"{'per-channel' if self.options.per_channel else 'per-tensor'} int8 weights",
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
    if options.activations not in ACTIVATION_TYPES:
        raise ExportError(
            f"unknown INT8 activation type '{options.activations}'",
            f"choose one of: {', '.join(ACTIVATION_TYPES)}",
        )
    model = onnx.load(str(source))
    name_nodes(model.graph)
    split_shared_biases(model)
    islands = float_nodes(model)
    narrow = [n for n in narrow_nodes(model, options.min_channels) if n not in islands]
    unfused = [n for n in unfused_nodes(model) if n not in islands and n not in narrow]
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
                activation_type={"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[
                    options.activations
                ],
                weight_type=QuantType.QInt8,
                per_channel=options.per_channel,
                calibrate_method=method[options.method],
                nodes_to_exclude=islands + narrow + unfused,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
    finally:
        logging.getLogger().setLevel(quiet)
    quantized = onnx.load(str(target))
    count = sum(node.op_type == "QuantizeLinear" for node in quantized.graph.node)
    return Int8Report(
        len(calibration),
        count,
        len(islands),
        len(narrow),
        len(unfused),
        options,
        count_fusion(target),
    )


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
