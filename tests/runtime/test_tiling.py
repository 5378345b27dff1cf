"""Tiling plans, local max-pooling and heatmap stitching: a defect much smaller than the frame
still decides its score, and the heatmap shows where it is.

Unit tests on hand-made grids and maps, a hypothesis property (tile then stitch gives the
resized frame back for any geometry the card allows), and an end-to-end run of a real ONNX
bundle built with onnx.helper (no torch): score = max over the tile, amap = the tile.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from bundles import DEFECT_YX, TILE, defect_frame, write_tile_bundle
from hypothesis import given, settings
from hypothesis import strategies as st

from adedge.bundle import PADDINGS, TilingSpec
from adedge.errors import BundleError
from adedge.preprocess import InputSpec, prepare_batch, resize, to_colour
from adedge.runtime.detector import Detector, FrameScore
from adedge.runtime.tiling import (
    cut_tiles,
    pad_to_plan,
    plan_tiles,
    reduce_scores,
    score_grid,
    stitch,
    to_frame_size,
)

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed


def spec(resize_to: tuple[int, int], tile: int, stride: int, padding: str = "reflect"):
    return TilingSpec(resize_to, tile, stride, padding)


# --- plans ----------------------------------------------------------------------------------


def test_cbigan_texture_plan_512_tile_64_is_an_8x8_grid():
    plan = plan_tiles((512, 512), spec((512, 512), 64, 64))
    assert plan.count == 64 and plan.grid == (8, 8)
    assert plan.padded_hw == plan.resized_hw == (512, 512)
    assert plan.origins[:2] == ((0, 0), (0, 64)) and plan.origins[8] == (64, 0)
    assert plan.origins[-1] == (448, 448)


def test_igd_plan_256_tile_32_stride_16_is_a_15x15_grid():
    plan = plan_tiles((480, 640), spec((256, 256), 32, 16))
    assert plan.count == 225 and plan.grid == (15, 15)
    assert plan.padded_hw == (256, 256) and plan.frame_hw == (480, 640)
    assert plan.origins[-1] == (224, 224)


def test_non_divisible_size_is_padded_bottom_right_to_exact_cover():
    plan = plan_tiles((100, 70), spec((100, 70), 32, 16))
    # rows: ceil((100 - 32) / 16) + 1 = 6 -> 112; cols: ceil((70 - 32) / 16) + 1 = 4 -> 80
    assert plan.grid == (6, 4) and plan.padded_hw == (112, 80)
    assert all(y + 32 <= 112 and x + 32 <= 80 for y, x in plan.origins)


def test_frame_smaller_than_a_tile_is_padded_up_to_one_tile():
    plan = plan_tiles((20, 12), spec((20, 12), 32, 16))
    assert plan.count == 1 and plan.padded_hw == (32, 32)
    assert cut_tiles(np.zeros((20, 12), np.uint8), plan).shape == (1, 32, 32, 1)


@pytest.mark.parametrize(
    "bad", [spec((64, 64), 32, 33), spec((64, 64), 32, 0), spec((64, 64), 32, 16, "zero")]
)
def test_plans_reject_what_the_card_does_not_allow(bad):
    with pytest.raises(ValueError):
        plan_tiles((64, 64), bad)


def test_cut_rejects_a_frame_of_another_size():
    plan = plan_tiles((64, 64), spec((64, 64), 32, 32))
    with pytest.raises(ValueError, match="plan is for"):
        cut_tiles(np.zeros((65, 64, 3), np.uint8), plan)


# --- padding and order ------------------------------------------------------------------------


def test_reflect_padding_mirrors_the_texture_instead_of_adding_zeros():
    image = np.arange(100 * 70, dtype=np.float32).reshape(100, 70)
    padded = {
        mode: pad_to_plan(image, plan_tiles((100, 70), spec((100, 70), 32, 16, mode)))[:, :, 0]
        for mode in PADDINGS
    }
    assert padded["reflect"].shape == (112, 80)
    np.testing.assert_array_equal(padded["reflect"][100, :70], image[98])  # edge not repeated
    np.testing.assert_array_equal(padded["reflect"][:100, 70], image[:, 68])
    np.testing.assert_array_equal(padded["replicate"][111, :70], image[99])
    assert not padded["constant"][100:].any() and not padded["constant"][:, 70:].any()
    for mode in PADDINGS:
        np.testing.assert_array_equal(padded[mode][:100, :70], image)


def test_tiles_are_cut_in_row_major_order():
    image = np.arange(96 * 64, dtype=np.float32).reshape(96, 64)
    plan = plan_tiles((96, 64), spec((96, 64), 32, 16))
    tiles = cut_tiles(image, plan)
    assert tiles.shape == (plan.count, 32, 32, 1) and plan.grid == (5, 3)
    assert list(plan.origins) == sorted(plan.origins)  # rows first, then columns
    for i, (y, x) in enumerate(plan.origins):
        assert divmod(i, plan.grid[1]) == (y // 16, x // 16)
        np.testing.assert_array_equal(tiles[i, :, :, 0], image[y : y + 32, x : x + 32])


def test_colour_channels_survive_cutting():
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    tiles = cut_tiles(image, plan_tiles((64, 64), spec((64, 64), 32, 32)))
    np.testing.assert_array_equal(tiles[3], image[32:, 32:])


# --- scores ----------------------------------------------------------------------------------


def test_score_grid_is_row_major():
    plan = plan_tiles((256, 256), spec((256, 256), 32, 16))
    grid = score_grid(np.arange(225.0), plan)
    assert grid.shape == (15, 15) and grid[2, 7] == 2 * 15 + 7


def test_max_is_local_max_pooling_and_mean_dilutes_one_defective_tile():
    plan = plan_tiles((256, 256), spec((256, 256), 32, 16))
    scores = np.zeros(225)
    scores[7 * 15 + 3] = 4.5
    assert reduce_scores(scores, plan, "max") == 4.5
    assert reduce_scores(scores, plan, "mean") == pytest.approx(4.5 / 225)
    with pytest.raises(ValueError):
        reduce_scores(scores[:-1], plan, "max")
    with pytest.raises(ValueError):
        reduce_scores(scores, plan, "median")


# --- stitching -------------------------------------------------------------------------------


def test_stitch_without_overlap_places_each_tile():
    plan = plan_tiles((64, 96), spec((64, 96), 32, 32))
    maps = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((6, 32, 32), np.float32)
    stitched = stitch(maps, plan)
    expected = np.kron(np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((32, 32)))
    np.testing.assert_array_equal(stitched, expected)


def test_stitch_averages_where_tiles_overlap():
    plan = plan_tiles((32, 48), spec((32, 48), 32, 16))
    assert plan.origins == ((0, 0), (0, 16))
    maps = np.stack([np.full((1, 32, 32), 1.0), np.full((1, 32, 32), 3.0)])  # (N, 1, t, t)
    stitched = stitch(maps, plan)
    assert stitched.shape == (32, 48) and stitched.dtype == np.float32
    np.testing.assert_array_equal(stitched[:, :16], 1.0)
    np.testing.assert_array_equal(stitched[:, 16:32], 2.0)
    np.testing.assert_array_equal(stitched[:, 32:], 3.0)


def test_stitch_crops_the_padding_and_resizes_to_the_frame():
    plan = plan_tiles((300, 200), spec((100, 70), 32, 16))
    maps = np.ones((plan.count, 8, 8), np.float32)  # a model whose map is smaller than a tile
    stitched = stitch(maps, plan)
    assert stitched.shape == (100, 70)
    np.testing.assert_allclose(to_frame_size(stitched, plan), np.ones((300, 200)))
    with pytest.raises(ValueError):
        stitch(maps[:-1], plan)


@settings(max_examples=150, deadline=None)
@given(
    frame=st.tuples(st.integers(1, 90), st.integers(1, 90)),
    resize_to=st.one_of(st.none(), st.tuples(st.integers(1, 90), st.integers(1, 90))),
    tile=st.integers(1, 40),
    stride_fraction=st.floats(0.0, 1.0),
    padding=st.sampled_from(PADDINGS),
    seed=st.integers(0, 2**16),
)
def test_tiling_then_stitching_reproduces_the_input(
    frame, resize_to, tile, stride_fraction, padding, seed
):
    stride = max(1, round(stride_fraction * tile))  # any 1 <= stride <= tile
    resize_to = resize_to or frame
    plan = plan_tiles(frame, spec(resize_to, tile, stride, padding))
    image = np.random.default_rng(seed).random(frame, dtype=np.float32)

    tiles = cut_tiles(image, plan)
    assert tiles.shape == (plan.grid[0] * plan.grid[1], tile, tile, 1)
    for size, padded in zip(plan.resized_hw, plan.padded_hw, strict=True):
        assert padded == tile if size <= tile else 0 <= padded - size < stride
    stitched = stitch(tiles[:, :, :, 0], plan)
    expected = resize(image[:, :, None], *resize_to)[:, :, 0]
    np.testing.assert_allclose(stitched, expected, rtol=1e-6)
    assert to_frame_size(stitched, plan).shape == frame


# --- end to end: a real ONNX bundle ----------------------------------------------------------


def peak(amap: np.ndarray) -> tuple[float, float]:
    """Centre of the hot spot (the top of a bright disc is a plateau, argmax its corner)."""
    ys, xs = np.nonzero(amap >= 0.5 * (amap.max() + np.median(amap)))
    return float(ys.mean()), float(xs.mean())


def expected_tile_scores(frame_bgr: np.ndarray, tiling: TilingSpec) -> np.ndarray:
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    tiles = cut_tiles(grey, plan_tiles(grey.shape, tiling))
    return tiles.reshape(len(tiles), -1).max(axis=1) / np.float32(255.0)


@pytest.mark.parametrize("resize_to", [(128, 128), (120, 100)])  # exact cover; reflect pad
def test_tiled_bundle_scores_max_over_tiles_and_stitches_the_amap(tmp_path, resize_to):
    tiling = spec(resize_to, TILE, 16)
    detector = Detector(write_tile_bundle(tmp_path / "b", tiling), threads=1)
    frame = defect_frame()
    [result] = detector.score_frames([frame])

    tile_scores = expected_tile_scores(frame, tiling)
    assert result.score == pytest.approx(float(tile_scores.max()), abs=1e-6)
    assert result.anomalous and result.score > 0.9
    assert set(result.latency_ms) == {"preprocess_ms", "infer_ms", "aggregate_ms"}
    assert result.amap is not None and result.amap.dtype == np.float32
    assert result.amap.shape == frame.shape[:2]
    assert np.hypot(*np.subtract(peak(result.amap), DEFECT_YX)) <= 2.0
    quiet = np.asarray(frame[:64, 96:, 0], np.float32) / 255.0  # far from the defect
    np.testing.assert_allclose(result.amap[:64, 96:], quiet, atol=0.06)


def test_mean_reduction_and_backend_chunks_give_the_same_answer(tmp_path):
    tiling = spec((128, 128), TILE, 16)
    detector = Detector(write_tile_bundle(tmp_path / "b", tiling, reduce="mean"), threads=1)
    frames = [defect_frame(), defect_frame(200, 300)]
    whole, maps, _ = detector.score_images_with_maps(frames)

    calls: list[int] = []
    inner = detector.stages[0].backend

    class Small:
        name, max_batch = "small", 10

        def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
            calls.append(len(batch))
            return inner.run(batch)

    detector.stages[0].backend = Small()
    chunked, chunked_maps, _ = detector.score_images_with_maps(frames)
    assert calls == [10] * 9 + [8]  # 2 frames x 49 tiles in chunks of at most 10
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    for a, b in zip(maps, chunked_maps, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    expected = [expected_tile_scores(f, tiling).mean() for f in frames]
    np.testing.assert_allclose(whole, expected, rtol=1e-5)
    assert [m.shape for m in maps] == [(256, 192), (200, 300)]


def test_whole_frame_bundle_still_scores_and_resizes_its_amap(tmp_path):
    detector = Detector(write_tile_bundle(tmp_path / "b", tiling=None), threads=1)
    frame = defect_frame()
    scores, latency = detector.score_images([frame[:, :, ::-1]])
    small = resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), TILE, TILE)
    assert scores[0] == pytest.approx(small.max() / 255.0, abs=1e-6)
    assert set(latency) == {"preprocess_ms", "infer_ms", "aggregate_ms"}
    [result] = detector.score_frames([frame])
    assert result.amap.shape == frame.shape[:2]
    assert np.hypot(*np.subtract(peak(result.amap), DEFECT_YX)) <= 12.0  # 8x coarser map


def test_bundle_without_amap_gives_no_heatmap(tmp_path):
    tiling = spec((128, 128), TILE, 32)
    detector = Detector(write_tile_bundle(tmp_path / "b", tiling, outputs=("score",)), threads=1)
    assert not detector.has_maps
    scores, maps, _ = detector.score_images_with_maps([defect_frame()[:, :, ::-1]])
    assert maps is None and scores.shape == (1,)
    [result] = detector.score_frames([defect_frame()])
    assert isinstance(result, FrameScore) and result.amap is None
    assert result.score == pytest.approx(scores[0])


def test_normalising_the_padded_frame_once_equals_normalising_each_tile(tmp_path):
    colour = InputSpec(TILE, TILE, "rgb", (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    tiling = spec((100, 70), TILE, 16)
    detector = Detector(write_tile_bundle(tmp_path / "b", tiling, input_spec=colour), threads=1)
    stage = detector.stages[0]
    image = np.random.default_rng(3).integers(0, 256, (90, 130, 3), np.uint8)
    plan = stage.plan(image.shape[:2], tiling)
    batch, plans = stage.prepare([image])
    assert plans == [plan]
    assert batch.shape == (plan.count, 3, TILE, TILE) and batch.flags.c_contiguous
    expected = prepare_batch(cut_tiles(to_colour(image, "rgb"), plan), colour)
    np.testing.assert_array_equal(batch, expected)
    assert stage.plan((90, 130), tiling) is plan  # computed once per frame size


def test_a_graph_smaller_than_the_tile_gets_resized_tiles_and_maps(tmp_path):
    tiling = spec((128, 128), TILE, 16)
    detector = Detector(write_tile_bundle(tmp_path / "b", tiling, size=16), threads=1)
    [result] = detector.score_frames([defect_frame()])
    assert result.anomalous and result.amap.shape == (256, 192)
    assert np.hypot(*np.subtract(peak(result.amap), DEFECT_YX)) <= 4.0


def test_an_amap_with_several_channels_is_a_bundle_error(tmp_path):
    colour = InputSpec(TILE, TILE, "rgb", (0.5,) * 3, (0.5,) * 3)  # the graph echoes 3 channels
    detector = Detector(write_tile_bundle(tmp_path / "b", None, input_spec=colour), threads=1)
    assert detector.score_images([defect_frame()])[0].shape == (1,)  # scores need no map
    with pytest.raises(BundleError, match="output 'amap' has shape"):
        detector.score_frames([defect_frame()])
