"""pytest-benchmark suite over `adedge bench --papers`' cases: every method at the papers'
input sizes (paper presets, random weights), one frame per call and a batch of frames.

Backends side by side: the whole torch model as the authors' test pass runs it, the pruned
torch scorer, and the exported graph on ONNX Runtime FP32, FP16 and INT8. Groups are cases, so
`pytest benchmarks/test_bench_papers.py --benchmark-only` prints each case's backends
together; compare ratios within a group, not lone times. Every call's scores are checked:
the full model and the FP32 graph must give the pruned scorer's scores. The cases above 32 px
are marked ``slow``: `make test` runs the 32 px ones as a smoke test, `make test-all` all.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adedge.export.paper_cases import build_case, inputs_per_frame
from adedge.runtime.bench.papers import (
    CASES,
    FULL,
    MAX_ROWS,
    PRUNED,
    BenchStage,
    frame_runner,
)

BACKENDS = (FULL, PRUNED, "onnxruntime:fp32", "onnxruntime:fp16", "onnxruntime:int8")
FRAMES = (1, 8)
THREADS = 1  # one thread per engine: comparable on a shared CI machine
EXACT = (FULL, "onnxruntime:fp32")  # must reproduce the pruned scorer


@pytest.fixture(scope="module")
def built_cases(tmp_path_factory):
    """Cases built on first use: a case's stages (graphs and torch models)."""
    cache: dict[str, list[BenchStage]] = {}

    def get(case) -> list[BenchStage]:
        if case.name not in cache:
            cache[case.name] = build_case(case, tmp_path_factory.mktemp(case.method))
        return cache[case.name]

    return get


def scores(outputs: list) -> list[np.ndarray]:
    """Per stage, the score array of a torch tensor or a backend's named outputs."""
    return [
        out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out["score"])
        for out in outputs
    ]


SMOKE_SIZE = 32  # `make test` runs the 32 px cases (Y-GAN, DDR-ID); the rest are `slow`


PARAMS = [
    pytest.param(
        case,
        backend,
        frames,
        id=f"{case.method}-{case.stages[0].image_size}-{backend.replace(' ', '')}-{frames}f",
        marks=() if case.stages[0].image_size <= SMOKE_SIZE else pytest.mark.slow,
    )
    for case in CASES
    for frames in FRAMES
    if frames == 1 or frames * inputs_per_frame(case) <= MAX_ROWS  # the benchmark's cap
    for backend in BACKENDS
]


@pytest.mark.parametrize(("case", "backend", "frames"), PARAMS)
def test_papers_case(benchmark, built_cases, case, backend, frames):
    stages = built_cases(case)
    torch.set_num_threads(THREADS)
    benchmark.group = f"{case.name}, {frames} frame(s) per call"
    benchmark.extra_info["frames_per_call"] = frames
    got = scores(benchmark(frame_runner(stages, backend, frames, THREADS)))
    for stage, values in zip(stages, got, strict=True):
        assert values.shape == (frames * stage.tiles,) and np.isfinite(values).all()
    if backend in EXACT:
        reference = scores(frame_runner(stages, PRUNED, frames, THREADS)())
        for values, expected in zip(got, reference, strict=True):
            np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-5)
