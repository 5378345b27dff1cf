"""Texture data sets with defects and masks, training views, and pixel-level AUROC."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from adedge.bundle import TilingSpec
from adedge.data import load
from adedge.defects import REAL_TEXTURES, draw_defect, read_texture
from adedge.errors import DataError
from adedge.metrics import auroc, pixel_auroc
from adedge.runtime.tiling import pad_to_plan, plan_tiles, tiles_from_padded
from adedge.train.methods.base import StagePlan, TrainView
from adedge.train.views import grid_tiles, iterate_inputs, random_views, tiles_per_image


def find_region(frame: np.ndarray, texture: np.ndarray) -> tuple[int, int]:
    """Where ``frame`` was cut from ``texture`` (exact match)."""
    result = cv2.matchTemplate(texture, frame, cv2.TM_SQDIFF)
    _, _, (x, y), _ = cv2.minMaxLoc(result)
    assert np.array_equal(texture[y : y + frame.shape[0], x : x + frame.shape[1]], frame)
    return y, x


def test_texture_frames_come_from_disjoint_regions():
    data = load("texture:brick,frame=64,limit=40")
    texture = read_texture("brick")
    assert (data.kind, data.colour, data.suggested_size) == ("textures", "gray", 64)
    assert len(data.train) == 40 and data.train.images[0].shape == (64, 64)
    for image in data.train.images[:10]:
        y, _ = find_region(image, texture)
        assert y + 64 <= 256  # top half
    for image in data.val.images[:10]:
        y, x = find_region(image, texture)
        assert y >= 256 and x + 64 <= 256  # bottom-left quarter
    clean = [im for im, label in zip(data.test.images, data.test.labels, strict=True) if not label]
    for image in clean[:10]:
        y, x = find_region(image, texture)
        assert y >= 256 and x >= 256  # unseen bottom-right quarter


def test_texture_test_split_has_defects_with_masks():
    data = load("texture:grass")
    test = data.test
    assert test.labels.tolist() == [0, 1] * 40
    assert set(test.kinds) == {"good", "scratch", "dark blob", "stain", "missing patch"}
    for image, mask, label in zip(test.images, test.masks, test.labels, strict=True):
        assert mask.shape == image.shape and mask.dtype == bool
        assert mask.any() == bool(label)
    # a defect changes the pixels under its mask far more than elsewhere
    rng = np.random.default_rng(0)
    clean = data.val.images[0].astype(np.float32)
    painted, weight = draw_defect(clean, "dark blob", rng)
    inside = np.abs(painted - clean)[weight >= 0.5].mean()
    outside = np.abs(painted - clean)[weight == 0].mean()
    assert inside > 20 and outside == 0


@pytest.mark.parametrize(
    "spec, words",
    [
        ("texture:", "does not name a texture"),
        ("texture:marble", "not known"),
        ("texture:brick,frame=300", "does not fit"),
    ],
)
def test_bad_texture_specs(spec, words):
    with pytest.raises(DataError, match=words):
        load(spec)


def test_texture_names_are_the_bundled_ones():
    for name in REAL_TEXTURES:
        assert read_texture(name).shape == (512, 512)


def test_mvtec_ground_truth_masks_are_read(tmp_path: Path):
    image = np.full((40, 40, 3), 120, np.uint8)
    for folder in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
        (tmp_path / folder).mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(tmp_path / "train/good" / f"{i:03d}.png"), image)
    cv2.imwrite(str(tmp_path / "test/good/000.png"), image)
    cv2.imwrite(str(tmp_path / "test/crack/000.png"), image)
    mask = np.zeros((40, 40), np.uint8)
    mask[5:10, 5:20] = 255
    cv2.imwrite(str(tmp_path / "ground_truth/crack/000_mask.png"), mask)
    test = load(str(tmp_path)).test
    assert test.kinds == ["crack", "good"]
    assert test.masks[0].sum() == 75 and not test.masks[1].any()


def test_pixel_auroc_counts_every_pixel():
    masks = [np.zeros((4, 4), bool), np.zeros((4, 4), bool)]
    masks[1][:2, :2] = True
    maps = [np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32)]
    maps[1][:2, :2] = 1.0
    assert pixel_auroc(maps, masks) == 1.0
    maps[0][0, 0] = 2.0  # one clean pixel above every defect pixel
    labels = np.concatenate([m.ravel() for m in masks]).astype(int)
    values = np.concatenate([m.ravel() for m in maps])
    assert pixel_auroc(maps, masks) == pytest.approx(auroc(labels, values))
    assert pixel_auroc(maps, [np.zeros((4, 4), bool)] * 2) is None
    assert pixel_auroc(maps, [None, None]) is None


@pytest.mark.parametrize("frame, tile, stride", [(64, 32, 16), (128, 64, 64), (100, 32, 16)])
def test_grid_tiles_match_the_runtime_tiling(frame, tile, stride):
    """Training validates on exactly the tiles, in the order, that the runtime scores."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (frame, frame, 3)).astype(np.float32)
    plan = plan_tiles((frame, frame), TilingSpec((frame, frame), tile, stride))
    padded = pad_to_plan(image, plan).transpose(2, 0, 1)
    runtime = tiles_from_padded(padded, plan, channels_first=True)
    stage = StagePlan(frame_size=frame, tile=tile, stride=stride)
    ours = grid_tiles(torch.from_numpy(image).permute(2, 0, 1)[None], stage).numpy()
    assert tiles_per_image(frame, stage) == plan.count == len(ours)
    np.testing.assert_array_equal(ours, runtime)


def test_iterate_inputs_covers_every_tile_once():
    frames = torch.arange(3 * 64 * 64, dtype=torch.float32).reshape(3, 1, 64, 64)
    stage = StagePlan(frame_size=64, tile=32, stride=16)
    chunks = list(iterate_inputs(frames, stage, batch_size=20, device=torch.device("cpu")))
    joined = torch.cat(chunks)
    assert torch.equal(joined, grid_tiles(frames, stage))
    assert all(len(chunk) <= 20 for chunk in chunks)


def test_random_views_crop_rotate_and_flip():
    torch.manual_seed(0)
    brick = torch.from_numpy(read_texture("brick")[:256, :256].astype(np.float32))[None, None]
    frames = brick.repeat(8, 1, 1, 1)
    crops = random_views(frames, TrainView(crop=64))
    assert crops.shape == (8, 1, 64, 64)
    texture = brick[0, 0].numpy()
    for crop in crops[:3, 0].numpy():  # without rotation: an exact window of the frame
        find_region(crop, texture)
    rotated = random_views(frames, TrainView(crop=64, rotation_degrees=45))
    assert rotated.shape == (8, 1, 64, 64) and torch.isfinite(rotated).all()
    assert rotated.min() >= frames.min() and rotated.max() <= frames.max()
    flipped = random_views(frames[:, :, :64, :64], TrainView(hflip=True))
    same = [torch.equal(f, frames[0, :, :64, :64]) for f in flipped]
    mirrored = [torch.equal(f, frames[0, :, :64, :64].flip(-1)) for f in flipped]
    assert all(a or b for a, b in zip(same, mirrored, strict=True)) and any(mirrored)
