"""Y-GAN's scoring subgraph (E_s + C, paper widths): ONNX Runtime vs torch eager, one run.

The paper reports 2.6 ms per 32x32 image and 13.5 ms per 256x256 image on an RTX 2080 Ti
(its test loop also ran E_r and the decoder). Compare the groups' ratios measured here side
by side, not lone absolute times. Images/s = ops/s x extra_info['images_per_call'].
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adedge.bundle import StageSpec
from adedge.export.onnx_export import INPUT_NAME, trace_to_onnx
from adedge.preprocess import InputSpec
from adedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from adedge.train.methods import load_method

CASES = [  # (input side, channels, batch): the paper's two sizes (MNIST-like grey, PlantVillage)
    (32, 1, 1),
    (32, 1, 64),
    (256, 3, 1),
    (256, 3, 8),
]


@pytest.fixture(scope="module")
def scorers(tmp_path_factory):
    """Per input size: the torch inference module and an ORT session of its export."""
    method = load_method("ygan")
    built = {}
    for size, channels in {(s, c) for s, c, _ in CASES}:
        torch.manual_seed(0)
        config = method.make_config("paper", image_size=size, channels=channels)
        model = method.build(config, 9).eval()
        scorer = method.inference_module(model).eval()
        spec = InputSpec(
            size, size, "gray" if channels == 1 else "rgb", (0.5,) * channels, (0.5,) * channels
        )
        path = tmp_path_factory.mktemp("bench") / f"ygan{size}.onnx"
        trace_to_onnx(scorer, spec, path, 17)
        stage = StageSpec("global", path.name, "", INPUT_NAME, spec)
        built[size] = (scorer, OnnxRuntimeBackend(path, stage))
    return built


def batch_of(size: int, channels: int, batch: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (batch, channels, size, size)).astype(np.float32)


@pytest.mark.parametrize("size, channels, batch", CASES)
def test_torch_eager(benchmark, scorers, size, channels, batch):
    benchmark.group = f"ygan {size}x{size}x{channels} batch {batch}"
    benchmark.extra_info["images_per_call"] = batch
    scorer, _ = scorers[size]
    images = torch.from_numpy(batch_of(size, channels, batch))

    def run():
        with torch.inference_mode():
            return scorer(images)

    assert benchmark(run).shape == (batch,)


@pytest.mark.parametrize("size, channels, batch", CASES)
def test_onnxruntime(benchmark, scorers, size, channels, batch):
    benchmark.group = f"ygan {size}x{size}x{channels} batch {batch}"
    benchmark.extra_info["images_per_call"] = batch
    _, backend = scorers[size]
    images = batch_of(size, channels, batch)
    assert benchmark(backend.run, images)["score"].shape == (batch,)
