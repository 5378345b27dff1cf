"""The runtime's one frame path (runtime/frames.py) against the training path, on real frames.

Training and export prepare images with ``adedge.preprocess.prepare_batch`` (RGB or grey data
set images; tiled stages then cut the prepared frame with ``train.views.grid_tiles``). The
runtime prepares camera/video frames, BGR, with ``frames.to_batch``: the C++ kernel where it
is built, the numpy twins otherwise. The two must give the same numbers, bit for bit, or a
bundle scores differently from the model that was trained and exported.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from adedge.bundle import TilingSpec
from adedge.paths import find_vtest
from adedge.preprocess import (
    InputSpec,
    prepare_batch,
    resize,
    tile_axis,
    tile_count,
    uint16_to_uint8,
)
from adedge.runtime import frames, kernels
from adedge.runtime.tiling import plan_tiles

MODES = ["numpy", "cpp"] if kernels.available() else ["numpy"]


@pytest.fixture(autouse=True)
def keep_dispatch_settings():
    saved = dict(kernels._state)
    yield
    kernels._state.update(saved)


@pytest.fixture(scope="module")
def real_frames() -> dict[str, list[np.ndarray]]:
    """Real pictures as a camera gives them: BGR colour frames (vtest.avi, scikit-image
    photographs) and grey frames (scikit-image's camera and textures)."""
    from skimage import data

    colour = [cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), data.coffee()[:, :, ::-1]]
    vtest = find_vtest()
    if vtest is not None:
        capture = cv2.VideoCapture(str(vtest))
        for index in range(40):
            ok, frame = capture.read()
            if ok and index % 20 == 0:
                colour.append(frame)
        capture.release()
    grey = [data.camera(), data.brick(), data.gravel()[:300, :420]]
    return {"colour": colour, "grey": grey}


def as_dataset_image(frame_bgr: np.ndarray) -> np.ndarray:
    """The same picture as a data set holds it (adedge.data reads images as RGB or grey)."""
    return frame_bgr if frame_bgr.ndim == 2 else cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)


def spec_of(size: tuple[int, int], colour: str) -> InputSpec:
    channels = 1 if colour == "gray" else 3
    return InputSpec(size[0], size[1], colour, (0.45,) * channels, (0.226,) * channels)


@pytest.mark.runtime
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("colour", ["gray", "rgb"])
@pytest.mark.parametrize("kind", ["colour", "grey"])
@pytest.mark.parametrize("size", [(32, 32), (64, 64), (28, 28), (256, 256), (48, 80)])
def test_whole_frame_batch_equals_the_training_batch(real_frames, mode, colour, kind, size):
    kernels.use(mode)
    spec = spec_of(size, colour)
    images = real_frames[kind]
    got = frames.to_batch(images, spec, [None] * len(images), order="bgr")
    want = prepare_batch([as_dataset_image(f) for f in images], spec)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    # a data set's RGB images through the runtime (score_images) give the same batch too
    rgb = frames.to_batch([as_dataset_image(f) for f in images], spec, [None] * len(images))
    np.testing.assert_array_equal(rgb, want)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("colour", ["gray", "rgb"])
@pytest.mark.parametrize("kind", ["colour", "grey"])
@pytest.mark.parametrize(
    ("frame_size", "tile", "stride"), [(256, 32, 16), (128, 64, 64), (100, 32, 16), (120, 32, 24)]
)
def test_tiled_batch_equals_the_training_tiles(
    real_frames, mode, colour, kind, frame_size, tile, stride
):
    """The trainer's validation/test tiles: the frame prepared at the stage's frame size,
    reflect-padded and cut by ``grid_tiles`` in torch; the runtime's: the kernel's tiles."""
    torch = pytest.importorskip("torch")
    from adedge.train.methods.base import StagePlan
    from adedge.train.views import grid_tiles, tiles_per_image

    kernels.use(mode)
    images = real_frames[kind]
    stage = StagePlan(frame_size, tile=tile, stride=stride, padding="reflect")
    frame_spec = spec_of((frame_size, frame_size), colour)
    prepared = prepare_batch([as_dataset_image(f) for f in images], frame_spec)
    want = grid_tiles(torch.from_numpy(prepared), stage).numpy()

    tiling = TilingSpec((frame_size, frame_size), tile, stride, "reflect")
    plans = [plan_tiles(f.shape[:2], tiling) for f in images]
    got = frames.to_batch(images, spec_of((tile, tile), colour), plans, order="bgr")
    assert len(got) == len(images) * tiles_per_image(frame_size, stage) == len(want)
    np.testing.assert_array_equal(got, want)


@pytest.mark.runtime
def test_whole_frames_go_through_the_kernel_as_bgr_into_one_batch(real_frames, monkeypatch):
    """The kernel reads each camera frame itself (no converted copy first) and writes into
    slices of the one batch the call returns."""
    if not kernels.available():
        pytest.skip("adedge._cpp is not built")
    from adedge import _cpp

    seen = []
    real = _cpp.preprocess_tiles

    def spy(frame, out, **kwargs):
        seen.append((frame, out, kwargs["order"]))
        return real(frame, out, **kwargs)

    monkeypatch.setattr(_cpp, "preprocess_tiles", spy)
    kernels.use("cpp")
    images = [np.ascontiguousarray(f) for f in real_frames["colour"][:2] + real_frames["grey"][:1]]
    tiling = TilingSpec((128, 128), 32, 32, "reflect")
    for plans in ([None] * 3, [plan_tiles(f.shape[:2], tiling) for f in images]):
        seen.clear()
        batch = frames.to_batch(images, spec_of((32, 32), "rgb"), plans, order="bgr")
        assert len(seen) == len(images)
        for image, (frame, out, order) in zip(images, seen, strict=True):
            assert frame is image and order == "bgr"
            assert np.shares_memory(out, batch)


@pytest.mark.runtime
def test_a_non_square_input_and_odd_images_take_the_twin():
    """What the kernel does not cover (non-square input, float or uint16 images) is written
    by the twin, into the same batch, equal to the training path."""
    rng = np.random.default_rng(0)
    images = [
        rng.random((50, 70, 3), dtype=np.float32),  # float RGB in [0, 1]
        rng.integers(0, 65536, (40, 40), dtype=np.uint16),
        rng.integers(0, 256, (33, 47, 4), dtype=np.uint8),  # RGBA: alpha dropped
    ]
    for spec in (spec_of((24, 40), "rgb"), spec_of((32, 32), "gray")):
        got = frames.to_batch(images, spec, [None] * 3, order="rgb")
        np.testing.assert_array_equal(got, prepare_batch(images, spec))


@pytest.mark.runtime
def test_run_in_chunks_joins_the_outputs_in_order():
    batch = np.arange(10.0)[:, None]
    calls = []

    def run(part):
        calls.append(len(part))
        return {"score": part[:, 0] * 2, "twice": part * 2}

    out = frames.run_in_chunks(run, batch, 4, ["score"])
    assert calls == [4, 4, 2] and list(out) == ["score"]
    np.testing.assert_array_equal(out["score"], np.arange(10.0) * 2)
    calls.clear()
    everything = frames.run_in_chunks(run, batch, None)
    assert calls == [10] and set(everything) == {"score", "twice"}
    calls.clear()
    assert set(frames.run_in_chunks(run, batch, 3)) == {"score", "twice"} and calls == [3] * 3 + [1]


@pytest.mark.runtime
def test_the_one_resize_keeps_the_layout():
    grey = np.arange(60 * 80, dtype=np.uint16).reshape(60, 80).astype(np.uint8)
    assert resize(grey, 30, 40).shape == (30, 40)
    assert resize(grey[:, :, None], 30, 40).shape == (30, 40, 1)
    assert resize(grey, 60, 80) is grey
    shrunk = cv2.resize(grey, (40, 30), interpolation=cv2.INTER_AREA)
    grown = cv2.resize(grey, (160, 90), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(resize(grey, 30, 40), shrunk)
    np.testing.assert_array_equal(resize(grey, 90, 160), grown)


@pytest.mark.runtime
def test_uint16_keeps_the_high_byte_exact_for_both_widenings():
    levels = np.arange(256, dtype=np.uint16)
    np.testing.assert_array_equal(uint16_to_uint8(levels * 257), levels)  # full-range scaling
    np.testing.assert_array_equal(uint16_to_uint8(levels << 8), levels)  # left-justified
    counts = np.bincount(uint16_to_uint8(np.arange(65536, dtype=np.uint16)), minlength=256)
    assert (counts == 256).all()  # every uint8 level gets an equal share


@pytest.mark.runtime
@pytest.mark.parametrize(("length", "tile", "stride"), [(5, 32, 16), (32, 32, 16), (100, 32, 16)])
def test_tile_axis_is_the_plans_geometry(length, tile, stride):
    plan = plan_tiles((length, length), TilingSpec((length, length), tile, stride, "reflect"))
    count, padded = tile_axis(length, tile, stride)
    assert (count, padded) == (plan.grid[0], plan.padded_hw[0])
    assert tile_count((length, length), tile, stride) == plan.count
