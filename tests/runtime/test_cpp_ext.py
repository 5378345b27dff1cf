"""The fused C++ kernels (adedge._cpp) against their numpy/OpenCV twins, which they replace
where they are built: a bundle must score the same with either.

preprocess_tiles must give the twin's tiles within +-1 LSB of the resized uint8 pixel (and
at least 99% bit-equal: the kernel reproduces OpenCV's arithmetic, not just its idea) for
random noise, textures and video frames, every resize branch (identity, integer and
fractional INTER_AREA, INTER_AREA's bilinear emulation, INTER_LINEAR), every padding, strides
from 1 to the tile, both output dtypes; stitch_max_mean must give the twin's map bit for bit.
Bad arguments raise TypeError/ValueError that say what to pass, never crash.
"""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adedge.bundle import TilingSpec
from adedge.paths import find_vtest
from adedge.preprocess import InputSpec, normalisation
from adedge.runtime import kernels
from adedge.runtime.tiling import plan_tiles, reduce_scores
from adedge.runtime.tiling import stitch as stitch_twin

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed

VTEST = find_vtest()  # OpenCV's sample video (`make system-deps` fetches it)
needs_cpp = pytest.mark.skipif(
    not kernels.available(), reason="adedge._cpp is not built (no C++17 compiler or pybind11)"
)


@pytest.fixture(autouse=True)
def keep_dispatch_settings():
    """Tests switch kernels and threads; put back what the session had."""
    saved = dict(kernels._state)
    yield
    kernels._state.update(saved)


@pytest.fixture
def cpp():
    from adedge import _cpp

    return _cpp


def spec_for(colour: str, tile: int, mean: float = 0.5, std: float = 0.25) -> InputSpec:
    channels = 1 if colour == "gray" else 3
    return InputSpec(tile, tile, colour, (mean,) * channels, (std,) * channels)


def fused(frame, plan, spec, order="rgb", dtype=np.float32, threads=0) -> np.ndarray:
    """Straight through adedge._cpp into a fresh buffer (no dispatch layer)."""
    from adedge import _cpp

    out = np.full((plan.count, spec.channels, plan.tile, plan.tile), np.nan, dtype)
    scale, shift = normalisation(spec)
    written = _cpp.preprocess_tiles(
        frame,
        out,
        resized_hw=plan.resized_hw,
        tile=plan.tile,
        stride=plan.stride,
        padding=plan.padding,
        colour=spec.colour,
        scale=scale.tolist(),
        shift=shift.tolist(),
        order=order,
        threads=threads,
    )
    assert written == plan.count
    return out


def twin(frame, plan, spec, order="rgb", dtype=np.float32) -> np.ndarray:
    return kernels.preprocess_tiles_numpy(frame, plan, spec, order=order, dtype=dtype)


def assert_within_one_lsb(got: np.ndarray, want: np.ndarray, spec: InputSpec) -> None:
    """|got - want| <= one uint8 step after normalisation (plus float16 rounding), and the
    two are bit-equal almost everywhere."""
    assert got.shape == want.shape and got.dtype == want.dtype
    assert not np.isnan(got).any()
    lsb = float(normalisation(spec)[0].max())
    want64 = want.astype(np.float64)
    rounding = 2.0**-10 * np.abs(want64) if got.dtype == np.float16 else 0.0
    excess = np.abs(got.astype(np.float64) - want64) - (lsb * 1.0001 + 2 * rounding)
    assert excess.max() <= 0.0, f"off by more than 1 LSB: {excess.max() / lsb + 1:.3f} LSB"
    assert np.mean(got == want) >= 0.99


def noise_frame(rng, height: int, width: int, channels: int) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


# (frame_hw, channels, resize_to, tile, stride, padding, colour): every resize branch
CASES = [
    ((576, 768), 3, (256, 256), 32, 16, "reflect", "rgb"),  # IGD: fractional INTER_AREA
    ((512, 512), 3, (512, 512), 64, 64, "reflect", "rgb"),  # CBiGAN: no resize
    ((512, 512), 1, (256, 256), 32, 32, "reflect", "gray"),  # 2x INTER_AREA (fast path)
    ((90, 120), 3, (30, 40), 16, 8, "constant", "gray"),  # 3x INTER_AREA, grey of colour
    ((100, 70), 1, (100, 70), 32, 16, "reflect", "gray"),  # no resize, padded bottom/right
    ((37, 53), 3, (80, 120), 32, 16, "replicate", "rgb"),  # INTER_LINEAR up
    ((60, 200), 3, (100, 90), 32, 24, "reflect", "rgb"),  # INTER_AREA, one axis grows
    ((120, 100), 4, (130, 95), 16, 5, "constant", "rgb"),  # INTER_LINEAR, one axis shrinks
    ((41, 29), 1, (5, 7), 16, 3, "reflect", "rgb"),  # smaller than a tile: wide reflect
    ((1, 17), 3, (1, 9), 8, 4, "reflect", "rgb"),  # one row: reflect of a single line
    ((33, 65), 3, (17, 33), 16, 1, "replicate", "gray"),  # stride 1: 1 x 18 x 2 = many tiles
    ((288, 352), 3, (256, 256), 32, 16, "constant", "rgb"),  # INTER_AREA below 2x
]


@needs_cpp
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c[0]}->{c[2]}-t{c[3]}s{c[4]}-{c[5]}" for c in CASES]
)
def test_fused_tiles_match_the_twin_on_noise(case, dtype):
    frame_hw, channels, resize_to, tile, stride, padding, colour = case
    rng = np.random.default_rng(sum(frame_hw) + tile)
    frame = noise_frame(rng, *frame_hw, channels)
    plan = plan_tiles(frame_hw, TilingSpec(resize_to, tile, stride, padding))
    spec = spec_for(colour, tile)
    for order in ("rgb", "bgr") if channels > 1 else ("rgb",):
        assert_within_one_lsb(
            fused(frame, plan, spec, order, dtype), twin(frame, plan, spec, order, dtype), spec
        )


@needs_cpp
def test_no_resize_is_bit_equal_in_both_dtypes():
    rng = np.random.default_rng(1)
    frame = noise_frame(rng, 96, 80, 3)
    plan = plan_tiles(frame.shape[:2], TilingSpec((96, 80), 32, 16, "reflect"))
    spec = InputSpec(32, 32, "rgb", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for dtype in (np.float32, np.float16):
        assert np.array_equal(
            fused(frame, plan, spec, dtype=dtype), twin(frame, plan, spec, dtype=dtype)
        )


@needs_cpp
@settings(max_examples=40, deadline=None)
@given(
    frame_hw=st.tuples(st.integers(1, 70), st.integers(1, 70)),
    resize_to=st.tuples(st.integers(1, 90), st.integers(1, 90)),
    channels=st.sampled_from([1, 3, 4]),
    tile=st.integers(1, 24),
    stride_part=st.floats(0.0, 1.0),
    padding=st.sampled_from(["reflect", "constant", "replicate"]),
    colour=st.sampled_from(["gray", "rgb"]),
    order=st.sampled_from(["rgb", "bgr"]),
    dtype=st.sampled_from([np.float32, np.float16]),
    seed=st.integers(0, 2**16),
)
def test_fused_tiles_match_the_twin_for_any_geometry(
    frame_hw, resize_to, channels, tile, stride_part, padding, colour, order, dtype, seed
):
    stride = max(1, round(stride_part * tile))
    frame = noise_frame(np.random.default_rng(seed), *frame_hw, channels)
    plan = plan_tiles(frame_hw, TilingSpec(resize_to, tile, stride, padding))
    spec = spec_for(colour, tile, mean=0.3, std=0.7)
    assert_within_one_lsb(
        fused(frame, plan, spec, order, dtype), twin(frame, plan, spec, order, dtype), spec
    )


@needs_cpp
@pytest.mark.parametrize(
    "name, resize_to, tile, stride, colour",
    [
        ("brick", (512, 512), 64, 64, "gray"),  # CBiGAN textures
        ("gravel", (256, 256), 32, 16, "rgb"),  # IGD local on a grey texture
        ("astronaut", (256, 256), 32, 16, "rgb"),
        ("coffee", (300, 450), 64, 48, "gray"),
        ("chelsea", (700, 900), 64, 64, "rgb"),  # upscaled
    ],
)
def test_fused_tiles_match_the_twin_on_skimage_images(name, resize_to, tile, stride, colour):
    from skimage import data

    frame = getattr(data, name)()
    plan = plan_tiles(frame.shape[:2], TilingSpec(resize_to, tile, stride, "reflect"))
    spec = spec_for(colour, tile)
    assert_within_one_lsb(fused(frame, plan, spec), twin(frame, plan, spec), spec)


def vtest_frames(count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(VTEST))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


@needs_cpp
@pytest.mark.skipif(VTEST is None, reason="vtest.avi not found: `make system-deps`")
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_fused_tiles_match_the_twin_on_vtest_frames(dtype):
    frames = vtest_frames(3)
    assert len(frames) == 3 and frames[0].shape == (576, 768, 3)
    igd = plan_tiles((576, 768), TilingSpec((256, 256), 32, 16, "reflect"))
    upscaled = plan_tiles((576, 768), TilingSpec((600, 800), 64, 40, "constant"))
    for frame in frames:  # BGR straight from the camera/video, order="bgr"
        for plan, colour in ((igd, "rgb"), (upscaled, "gray")):
            spec = spec_for(colour, plan.tile)
            want = twin(frame, plan, spec, "bgr", dtype)
            assert_within_one_lsb(fused(frame, plan, spec, "bgr", dtype), want, spec)


@needs_cpp
def test_bgr_frames_with_order_bgr_equal_their_rgb_frames():
    frame = noise_frame(np.random.default_rng(2), 80, 60, 3)
    plan = plan_tiles((80, 60), TilingSpec((50, 70), 16, 8, "reflect"))
    for colour in ("rgb", "gray"):
        spec = spec_for(colour, 16)
        rgb = fused(frame, plan, spec, "rgb")
        assert np.array_equal(
            fused(np.ascontiguousarray(frame[:, :, ::-1]), plan, spec, "bgr"), rgb
        )


@needs_cpp
def test_threads_do_not_change_the_result():
    frame = noise_frame(np.random.default_rng(3), 576, 768, 3)
    plan = plan_tiles((576, 768), TilingSpec((256, 256), 32, 16, "reflect"))
    spec = spec_for("rgb", 32)
    one = fused(frame, plan, spec, threads=1)
    for count in (2, 3, 7, 0):
        assert np.array_equal(fused(frame, plan, spec, threads=count), one)
    maps = np.random.default_rng(4).random((plan.count, 32, 32), dtype=np.float32)
    kernels.use("cpp")
    kernels.set_threads(1)
    single = kernels.stitch(maps, plan)
    kernels.set_threads(5)
    assert np.array_equal(kernels.stitch(maps, plan), single)


@needs_cpp
def test_tiles_go_into_a_slice_of_a_bigger_batch_and_nowhere_else(cpp):
    rng = np.random.default_rng(5)
    frames = [noise_frame(rng, 70, 90, 3) for _ in range(2)]
    plan = plan_tiles((70, 90), TilingSpec((64, 64), 32, 16, "reflect"))
    spec = spec_for("rgb", 32)
    n = plan.count
    batch = np.full((2 * n + 3, 3, 32, 32), np.nan, np.float32)
    kernels.use("cpp")
    first = kernels.preprocess_tiles(frames[0], plan, spec, out=batch[:n])
    kernels.preprocess_tiles(frames[1], plan, spec, out=batch[n:])
    assert np.shares_memory(first, batch)
    assert np.array_equal(batch[:n], twin(frames[0], plan, spec))
    assert np.array_equal(batch[n : 2 * n], twin(frames[1], plan, spec))
    assert np.isnan(batch[2 * n :]).all()  # rows past the plan are untouched


@needs_cpp
def test_a_crop_with_padded_rows_is_read_in_place():
    big = noise_frame(np.random.default_rng(6), 300, 400, 3)
    crop = big[10:250, 20:380]  # rows longer than the crop: a stride, not a copy
    assert not crop.flags.c_contiguous
    plan = plan_tiles(crop.shape[:2], TilingSpec((120, 180), 32, 16, "replicate"))
    spec = spec_for("rgb", 32)
    assert np.array_equal(fused(crop, plan, spec), fused(np.ascontiguousarray(crop), plan, spec))


@needs_cpp
def test_float_to_half_rounds_like_numpy(cpp):
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            rng.normal(0, 3, 2000).astype(np.float32),
            rng.uniform(-7e4, 7e4, 500).astype(np.float32),  # overflow to inf
            (rng.uniform(-1, 1, 500) * 2.0**-15).astype(np.float32),  # half subnormals
            np.float16(rng.normal(0, 1, 500)).astype(np.float32)
            + np.float32(2.0**-12),  # near ties
            np.array([0.0, -0.0, 65504, 65519.99, 65520, np.inf, -np.inf], np.float32),
        ]
    )
    got = np.array([cpp.float_to_half(float(v)) for v in values], np.uint16)
    with np.errstate(over="ignore"):
        want = values.astype(np.float16).view(np.uint16)
    assert np.array_equal(got, want)
    assert cpp.float_to_half(float("nan")) & 0x7C00 == 0x7C00


# --- stitching ----------------------------------------------------------------------------

STITCH_CASES = [
    ((256, 256), 32, 16),  # IGD
    ((512, 512), 64, 64),  # CBiGAN: no overlap
    ((100, 70), 32, 16),  # padded bottom/right, cropped
    ((5, 7), 16, 3),  # smaller than a tile
    ((40, 33), 8, 1),  # stride 1: up to 64 tiles over a pixel
    ((61, 47), 20, 7),
]


@needs_cpp
@pytest.mark.parametrize("resize_to, tile, stride", STITCH_CASES)
def test_stitch_max_mean_equals_the_twin(cpp, resize_to, tile, stride):
    plan = plan_tiles((90, 90), TilingSpec(resize_to, tile, stride, "reflect"))
    rng = np.random.default_rng(tile + stride)
    maps = rng.normal(0, 10, (plan.count, 1, tile, tile)).astype(np.float32)
    scores = rng.normal(0, 1, plan.count)
    kernels.use("cpp")
    score, amap = kernels.stitch_max_mean(scores, maps, plan, "max")
    want_score, want_map = kernels.stitch_max_mean_numpy(scores, maps, plan, "max")
    assert amap.dtype == np.float32 and amap.shape == plan.resized_hw
    assert np.array_equal(amap, want_map) and score == want_score
    mean_score, _ = kernels.stitch_max_mean(scores.astype(np.float32), maps[:, 0], plan, "mean")
    assert mean_score == pytest.approx(
        reduce_scores(scores.astype(np.float32), plan, "mean"), rel=1e-12
    )
    assert np.array_equal(kernels.stitch(maps, plan), stitch_twin(maps, plan))


@needs_cpp
def test_stitch_writes_into_a_given_map_and_max_keeps_nan(cpp):
    plan = plan_tiles((64, 64), TilingSpec((64, 64), 32, 16, "reflect"))
    maps = np.ones((plan.count, 32, 32), np.float32)
    target = np.full((64, 64), -1.0, np.float32)
    scores = np.arange(plan.count, dtype=np.float64)
    kw = {"resized_hw": (64, 64), "tile": 32, "stride": 16}
    score, amap = cpp.stitch_max_mean(scores, maps, out=target, **kw)
    assert amap is target and np.all(target == 1.0) and score == plan.count - 1
    scores[3] = np.nan
    assert np.isnan(cpp.stitch_max_mean(scores, maps, **kw)[0])


# --- bad arguments ------------------------------------------------------------------------


@needs_cpp
@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"frame": np.zeros((40, 40, 3), np.float32)}, TypeError, "frame must be uint8"),
        ({"frame": [[0, 1], [2, 3]]}, TypeError, "frame must be a numpy array"),
        ({"frame": np.zeros((40, 40, 2), np.uint8)}, ValueError, "1, 3 or 4 channels"),
        ({"frame": np.zeros((40, 80, 3), np.uint8)[:, ::2]}, ValueError, "contiguous"),
        ({"frame": np.zeros((40, 40, 3), np.uint8)[:, :, ::-1]}, ValueError, "contiguous"),
        ({"out": np.zeros((9, 3, 16, 16), np.float64)}, TypeError, "float32 or float16"),
        ({"out": np.zeros((16, 16, 3, 9), np.float32).T}, ValueError, "C-contiguous"),
        ({"out": np.zeros((8, 3, 16, 16), np.float32)}, ValueError, "too small"),
        ({"out": np.zeros((9, 3, 16, 15), np.float32)}, ValueError, "must be (N, 3, 16, 16)"),
        ({"out": np.zeros((9, 1, 16, 16), np.float32)}, ValueError, "must be (N, 3, 16, 16)"),
        ({"stride": 17}, ValueError, "stride <= tile"),
        ({"padding": "wrap"}, ValueError, "padding must be"),
        ({"colour": "hsv"}, ValueError, "colour must be"),
        ({"order": "gbr"}, ValueError, "order must be"),
        ({"scale": [1.0]}, ValueError, "scale needs 3 values"),
        ({"resized_hw": (0, 40)}, ValueError, "resized_hw must be positive"),
    ],
)
def test_bad_preprocess_arguments_raise_clear_errors(cpp, change, error, message):
    args = {
        "frame": np.zeros((40, 40, 3), np.uint8),
        "out": np.zeros((9, 3, 16, 16), np.float32),  # (40 - 16) / 12 + 1 = 3 -> 3 x 3 tiles
        "resized_hw": (40, 40),
        "tile": 16,
        "stride": 12,
        "padding": "reflect",
        "colour": "rgb",
        "scale": [1.0, 1.0, 1.0],
        "shift": [0.0, 0.0, 0.0],
        "order": "rgb",
    } | change
    frame, out = args.pop("frame"), args.pop("out")
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        cpp.preprocess_tiles(frame, out, **args)


@needs_cpp
def test_read_only_out_is_refused(cpp):
    out = np.zeros((1, 1, 8, 8), np.float32)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        cpp.preprocess_tiles(
            np.zeros((8, 8), np.uint8), out, resized_hw=(8, 8), tile=8, stride=8,
            padding="reflect", colour="gray", scale=[1.0], shift=[0.0],
        )  # fmt: skip


@needs_cpp
@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"maps": np.zeros((4, 16, 16), np.float64)}, TypeError, "maps must be float32"),
        ({"maps": np.zeros((3, 16, 16), np.float32)}, ValueError, "3 tile maps but the plan has 4"),
        ({"maps": np.zeros((4, 2, 16, 16), np.float32)}, ValueError, "maps must be"),
        ({"maps": np.zeros((4, 16, 32), np.float32)[:, :, ::2]}, ValueError, "C-contiguous"),
        ({"scores": np.zeros(4, np.int64)}, TypeError, "float32 or float64"),
        ({"scores": np.zeros(5)}, ValueError, "5 tile scores"),
        ({"out": np.zeros((24, 23), np.float32)}, ValueError, "out must be"),
        ({"out": np.zeros((24, 24), np.float16)}, TypeError, "out must be float32"),
        ({"reduce": "median"}, ValueError, "reduce must be"),
    ],
)
def test_bad_stitch_arguments_raise_clear_errors(cpp, change, error, message):
    args = {
        "scores": np.zeros(4),
        "maps": np.zeros((4, 16, 16), np.float32),  # 24 x 24, tile 16, stride 8 -> 2 x 2
        "resized_hw": (24, 24),
        "tile": 16,
        "stride": 8,
    } | change
    scores, maps = args.pop("scores"), args.pop("maps")
    with pytest.raises(error, match=message):
        cpp.stitch_max_mean(scores, maps, **args)


# --- the dispatch layer -------------------------------------------------------------------


def test_dispatch_knobs_validate_and_numpy_can_be_forced():
    kernels.use("numpy")
    assert kernels.active() == "numpy"
    with pytest.raises(ValueError, match="kernel mode"):
        kernels.use("fortran")
    with pytest.raises(ValueError, match="threads"):
        kernels.set_threads(-1)


def test_without_the_extension_the_twin_runs(monkeypatch):
    monkeypatch.setattr(kernels, "_cpp", None)
    kernels.use("auto")
    assert not kernels.available() and kernels.active() == "numpy"
    with pytest.raises(RuntimeError, match="not built"):
        kernels.use("cpp")
    frame = noise_frame(np.random.default_rng(8), 50, 40, 3)
    plan = plan_tiles((50, 40), TilingSpec((30, 30), 16, 8, "reflect"))
    spec = spec_for("rgb", 16)
    out = np.zeros((plan.count + 1, 3, 16, 16), np.float16)
    got = kernels.preprocess_tiles(frame, plan, spec, out=out)
    assert np.shares_memory(got, out) and got.shape == (plan.count, 3, 16, 16)
    assert np.array_equal(got, twin(frame, plan, spec, dtype=np.float16))
    maps = np.ones((plan.count, 16, 16), np.float32)
    assert np.array_equal(kernels.stitch(maps, plan), np.ones((30, 30), np.float32))


def test_extension_is_built_where_a_compiler_is():
    """A silent build failure would quietly leave the runtime on the slower twins."""
    compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
    if compiler is not None and not os.environ.get("ADEDGE_NO_CPP"):
        assert kernels.available(), "`pip install -e .` should have built adedge._cpp"
    if kernels.available() and kernels._state["mode"] == "auto":
        assert kernels.active() == ("cpp" if kernels.AUTO_PREFERS_CPP else "numpy")
    if not kernels.available():
        assert kernels.active() == "numpy"


@needs_cpp
def test_detector_gives_the_same_scores_and_maps_with_either_kernel(tmp_path, monkeypatch):
    from bundles import defect_frame, write_tile_bundle

    from adedge import _cpp
    from adedge.runtime.detector import Detector

    tiling = TilingSpec((120, 100), 32, 16, "reflect")
    colour = InputSpec(32, 32, "rgb", (0.2, 0.3, 0.4), (0.5, 0.6, 0.7))
    detectors = [  # grey with heatmaps; colour with scores only (its identity map has 3 channels)
        Detector(write_tile_bundle(tmp_path / "grey", tiling), threads=1),
        Detector(
            write_tile_bundle(tmp_path / "rgb", tiling, outputs=("score",), input_spec=colour),
            threads=1,
        ),
    ]
    frames = [defect_frame(), defect_frame(200, 260)]
    calls: list[int] = []
    real = _cpp.preprocess_tiles

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_cpp, "preprocess_tiles", counted)
    for detector in detectors:
        results = {}
        for mode in ("numpy", "cpp"):
            kernels.use(mode)
            calls.clear()
            results[mode] = detector.score_frames(frames)
            assert len(calls) == (len(frames) if mode == "cpp" else 0)  # what ran
        for a, b in zip(results["numpy"], results["cpp"], strict=True):
            assert a.score == b.score
            assert (a.amap is None and b.amap is None) or np.array_equal(a.amap, b.amap)
    assert results["cpp"][0].amap is None  # the colour bundle; the grey one compared maps
