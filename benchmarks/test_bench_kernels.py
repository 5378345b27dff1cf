"""Fused C++ frame kernels (adedge._cpp) vs their numpy/OpenCV twins, one frame per call.

Two tiled stages from the papers: IGD's local stage (a 768x576 video frame resized to 256x256,
32x32 tiles every 16 px: 225 tiles) and CBiGAN's textures (a 512x512 frame, 64 tiles of
64x64). frames/s = ops/s. The runtime takes the C++ kernel by default only because it is the
faster one here (runtime/kernels.py, AUTO_PREFERS_CPP); compare within a group, one run:

    python -m pytest benchmarks/test_bench_kernels.py --benchmark-only \\
        --benchmark-columns=median,ops,rounds --benchmark-sort=name

The twin includes OpenCV's own threads (cv2.getNumThreads()); the kernel is run with one
thread and with every core (threads=0).

The "batch" groups time what a Detector call does before inference, for 8 BGR video frames:
``before`` is the path the Detector took until the frame path was folded into
``runtime.frames.to_batch`` (a cvtColor BGR->RGB copy of every frame, then whole frames
through ``prepare_batch`` and tiled frames through the kernel into one array per frame,
joined by ``np.concatenate``); ``to_batch-cpp`` and ``to_batch-numpy`` are the one path
now, with the kernel (BGR read directly, every frame written into one batch) and with the
numpy twins. All three give the same batch (asserted); no speed is asserted.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from adedge.bundle import TilingSpec
from adedge.paths import find_vtest
from adedge.preprocess import InputSpec, bgr_to_rgb, prepare_batch
from adedge.runtime import frames, kernels
from adedge.runtime.tiling import plan_tiles

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed

VTEST = find_vtest()  # OpenCV's sample video (`make system-deps` fetches it)
STAGES = {  # name: (frame (H, W), tiling)
    "igd-768x576-256-t32s16": ((576, 768), TilingSpec((256, 256), 32, 16, "reflect")),
    "cbigan-512-t64": ((512, 512), TilingSpec((512, 512), 64, 64, "reflect")),
}
needs_cpp = pytest.mark.skipif(not kernels.available(), reason="adedge._cpp is not built")


def video_frames(count: int) -> list[np.ndarray]:
    """The first ``count`` BGR frames of vtest.avi (768x576); fewer when it is missing."""
    capture = cv2.VideoCapture(str(VTEST)) if VTEST is not None else None
    out: list[np.ndarray] = []
    while capture is not None and len(out) < count:
        ok, frame = capture.read()
        if not ok:
            break
        out.append(frame)
    if capture is not None:
        capture.release()
    return out


def frame_of(height: int, width: int) -> np.ndarray:
    """A BGR frame: vtest.avi's first frame when it fits, else smooth noise (same cost)."""
    if (height, width) == (576, 768) and (first := video_frames(1)):
        return first[0]
    noise = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (5, 5), 2.0)


@pytest.fixture(autouse=True)
def keep_dispatch_settings():
    saved = dict(kernels._state)
    yield
    kernels._state.update(saved)


def setup_stage(name: str):
    frame_hw, tiling = STAGES[name]
    plan = plan_tiles(frame_hw, tiling)
    spec = InputSpec(plan.tile, plan.tile, "rgb", (0.5,) * 3, (0.5,) * 3)
    out = np.empty((plan.count, 3, plan.tile, plan.tile), np.float32)
    return frame_of(*frame_hw), plan, spec, out


@pytest.mark.parametrize("name", list(STAGES))
def test_preprocess_twin(benchmark, name):
    frame, plan, spec, _ = setup_stage(name)
    benchmark.group = f"preprocess {name}"
    benchmark.extra_info.update(tiles=plan.count, cv2_threads=cv2.getNumThreads())
    tiles = benchmark(kernels.preprocess_tiles_numpy, frame, plan, spec, None, "bgr")
    assert tiles.shape == (plan.count, 3, plan.tile, plan.tile)


@needs_cpp
@pytest.mark.parametrize("threads", [1, 0])
@pytest.mark.parametrize("name", list(STAGES))
def test_preprocess_fused(benchmark, name, threads):
    frame, plan, spec, out = setup_stage(name)
    kernels.use("cpp")
    kernels.set_threads(threads)
    benchmark.group = f"preprocess {name}"
    benchmark.extra_info.update(tiles=plan.count, threads=threads)
    tiles = benchmark(kernels.preprocess_tiles, frame, plan, spec, out, "bgr")
    assert np.array_equal(tiles, kernels.preprocess_tiles_numpy(frame, plan, spec, None, "bgr"))


def tile_maps(plan) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.random((plan.count, 1, plan.tile, plan.tile), dtype=np.float32)


@pytest.mark.parametrize("name", list(STAGES))
def test_stitch_twin(benchmark, name):
    _, plan, _, _ = setup_stage(name)
    maps, scores = tile_maps(plan), np.arange(plan.count, dtype=np.float64)
    benchmark.group = f"stitch {name}"
    score, amap = benchmark(kernels.stitch_max_mean_numpy, scores, maps, plan, "max")
    assert score == plan.count - 1 and amap.shape == plan.resized_hw


@needs_cpp
@pytest.mark.parametrize("threads", [1, 0])
@pytest.mark.parametrize("name", list(STAGES))
def test_stitch_fused(benchmark, name, threads):
    _, plan, _, _ = setup_stage(name)
    maps, scores = tile_maps(plan), np.arange(plan.count, dtype=np.float64)
    kernels.use("cpp")
    kernels.set_threads(threads)
    benchmark.group = f"stitch {name}"
    benchmark.extra_info["threads"] = threads
    score, amap = benchmark(kernels.stitch_max_mean, scores, maps, plan, "max")
    assert score == plan.count - 1
    assert np.array_equal(amap, kernels.stitch_max_mean_numpy(scores, maps, plan)[1])


BATCH_FRAMES = 8
BATCH_STAGES = {  # name: (InputSpec, tiling or None); frames are vtest.avi's 768x576
    "whole-768x576-64-rgb": (InputSpec(64, 64, "rgb", (0.5,) * 3, (0.5,) * 3), None),
    "whole-768x576-32-gray": (InputSpec(32, 32, "gray"), None),
    "igd-768x576-256-t32s16": (InputSpec(32, 32, "gray"), STAGES["igd-768x576-256-t32s16"][1]),
}


def batch_before(images: list[np.ndarray], spec: InputSpec, plans: list) -> np.ndarray:
    """The Detector's preprocessing before ``frames.to_batch`` (kept here to compare)."""
    rgb = [bgr_to_rgb(image) for image in images]
    if plans[0] is None:
        return prepare_batch(rgb, spec)
    pairs = zip(rgb, plans, strict=True)
    return np.concatenate([kernels.preprocess_tiles(image, plan, spec) for image, plan in pairs])


@pytest.mark.parametrize("path", ["before", "to_batch-cpp", "to_batch-numpy"])
@pytest.mark.parametrize("name", list(BATCH_STAGES))
def test_batch(benchmark, name, path):
    if path != "to_batch-numpy" and not kernels.available():
        pytest.skip("adedge._cpp is not built")
    spec, tiling = BATCH_STAGES[name]
    images = video_frames(BATCH_FRAMES) or [frame_of(576, 768)] * BATCH_FRAMES
    plans = [None if tiling is None else plan_tiles(i.shape[:2], tiling) for i in images]
    kernels.use("numpy" if path == "to_batch-numpy" else "cpp")
    benchmark.group = f"batch {name} x{BATCH_FRAMES}"
    benchmark.extra_info.update(rows=len(plans) * (plans[0].count if tiling else 1))
    if path == "before":
        batch = benchmark(batch_before, images, spec, plans)
    else:
        batch = benchmark(frames.to_batch, images, spec, plans, "bgr")
    kernels.use("numpy")
    assert np.array_equal(batch, batch_before(images, spec, plans))
