"""ONNX Runtime on the CPU: FP32 vs INT8 (static QDQ) vs the FP16 graph, one run, same inputs.

Y-GAN's scoring subgraph (E_s + C) at the paper's widths, untrained (speed does not depend on
the weights), calibrated on 64 real scikit-learn digits prepared like the stage's inputs (INT8
scales come from real activations, as at export). Compare the three rows of each group: the
ratio INT8/FP32 is the number of interest on x86/ARM edge boxes; the FP16 graph is there to
show it is a GPU format (the CPU provider upcasts most FP16 ops). Images/s = ops/s x
extra_info['images_per_call'].
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from adedge.bundle import GraphFile, StageSpec
from adedge.export.fp16_checks import write_fp16
from adedge.export.int8 import quantize_int8
from adedge.export.trace import INPUT_NAME, trace_to_onnx
from adedge.preprocess import InputSpec, prepare_batch
from adedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from adedge.train.methods import load_method

CASES = [(32, 1, 1), (32, 1, 64), (128, 3, 8)]  # (input side, channels, batch)
PRECISIONS = ("fp32", "int8", "fp16")


def spec_for(size: int, channels: int) -> InputSpec:
    colour = "gray" if channels == 1 else "rgb"
    return InputSpec(size, size, colour, (0.5,) * channels, (0.5,) * channels)


def real_inputs(spec: InputSpec, count: int) -> np.ndarray:
    digits = (load_digits().images[:count] * (255.0 / 16.0)).astype(np.uint8)
    return prepare_batch(list(digits), spec)


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    """Per input size: an ORT session of the FP32, INT8 and FP16 graphs of one scorer."""
    method = load_method("ygan")
    built = {}
    for size, channels in {(s, c) for s, c, _ in CASES}:
        torch.manual_seed(0)
        config = method.make_config("paper", image_size=size, channels=channels)
        scorer = method.inference_module(method.build(config, 9).eval()).eval()
        spec = spec_for(size, channels)
        folder = tmp_path_factory.mktemp(f"int8-{size}")
        paths = {p: folder / f"global.{p}.onnx" for p in PRECISIONS}
        trace_to_onnx(scorer, spec, paths["fp32"], 17)
        quantize_int8(paths["fp32"], paths["int8"], INPUT_NAME, real_inputs(spec, 64))
        write_fp16(paths["fp32"], paths["fp16"])
        stage = StageSpec("global", {"fp32": GraphFile("global.onnx", "")}, INPUT_NAME, spec)
        built[size] = {p: OnnxRuntimeBackend(path, stage) for p, path in paths.items()}
    return built


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("size, channels, batch", CASES)
def test_onnxruntime_cpu(benchmark, backends, size, channels, batch, precision):
    benchmark.group = f"ygan paper {size}x{size}x{channels} batch {batch} (ORT CPU)"
    benchmark.extra_info["images_per_call"] = batch
    benchmark.extra_info["precision"] = precision
    images = real_inputs(spec_for(size, channels), batch)
    out = benchmark(backends[size][precision].run, images)["score"]
    assert out.shape == (batch,) and np.isfinite(out).all()
