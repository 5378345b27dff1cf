"""DDR-ID's scoring subgraphs (paper widths): ONNX Runtime vs torch eager, one run.

AS_l runs E_C only; AS_r runs E_C + D_C (Algorithm 2 picks one per model at export). Both
include the in-graph GCN + min-max preprocessing. The paper reports no timings (its Section
4 gives only the GPU, a TITAN X), so only the ratios measured here side by side mean
anything. Images/s = ops/s x extra_info['images_per_call']. On a shared machine set
ADEDGE_BENCH_THREADS=1 to pin torch and ONNX Runtime to one thread each (compare minima).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from adedge.bundle import StageSpec
from adedge.export.onnx_export import INPUT_NAME, trace_to_onnx
from adedge.preprocess import InputSpec
from adedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from adedge.train.methods import load_method
from adedge.train.methods.ddrid import SCORES

CASES = [  # (channels, batch, score): Table 1's MNIST column (grey) and CIFAR-10 column (RGB)
    (channels, batch, score) for channels in (1, 3) for batch in (1, 64) for score in SCORES
]
SIZE = 32
THREADS = int(os.environ.get("ADEDGE_BENCH_THREADS", "0"))  # 0: each library's default


@pytest.fixture(scope="module")
def scorers(tmp_path_factory):
    """Per (channels, score): the torch inference module and an ORT session of its export."""
    method = load_method("ddrid")
    torch_threads = torch.get_num_threads()
    if THREADS:
        torch.set_num_threads(THREADS)
    built = {}
    for channels in (1, 3):
        torch.manual_seed(0)
        config = method.make_config("paper", image_size=SIZE, channels=channels)
        model = method.build(config, 1).eval()
        model.preprocess.low.fill_(-2.0)  # as if fitted: constants of a plausible range
        model.preprocess.high.fill_(6.0)
        model.center.normal_()
        spec = InputSpec(
            SIZE, SIZE, "gray" if channels == 1 else "rgb", (0.5,) * channels, (0.5,) * channels
        )
        for score in SCORES:
            model.score_choice.fill_(SCORES.index(score))
            scorer = method.inference_module(model).eval()
            path = tmp_path_factory.mktemp("bench") / f"ddrid{channels}{score}.onnx"
            trace_to_onnx(scorer, spec, path, 17)
            stage = StageSpec("global", path.name, "", INPUT_NAME, spec)
            built[channels, score] = (scorer, OnnxRuntimeBackend(path, stage, THREADS))
    yield built
    torch.set_num_threads(torch_threads)


def batch_of(channels: int, batch: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (batch, channels, SIZE, SIZE)).astype(np.float32)


@pytest.mark.parametrize("channels, batch, score", CASES)
def test_torch_eager(benchmark, scorers, channels, batch, score):
    benchmark.group = f"ddrid {score} {SIZE}x{SIZE}x{channels} batch {batch}"
    benchmark.extra_info["images_per_call"] = batch
    scorer, _ = scorers[channels, score]
    images = torch.from_numpy(batch_of(channels, batch))

    def run():
        with torch.inference_mode():
            return scorer(images)

    assert benchmark(run).shape == (batch,)


@pytest.mark.parametrize("channels, batch, score", CASES)
def test_onnxruntime(benchmark, scorers, channels, batch, score):
    benchmark.group = f"ddrid {score} {SIZE}x{SIZE}x{channels} batch {batch}"
    benchmark.extra_info["images_per_call"] = batch
    _, backend = scorers[channels, score]
    images = batch_of(channels, batch)
    assert benchmark(backend.run, images)["score"].shape == (batch,)
