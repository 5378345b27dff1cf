"""``texture:NAME``: frames cut from a real scikit-image texture photograph, half of the test
frames with one synthetic defect and its pixel mask.
"""

from __future__ import annotations

import numpy as np

from adedge.data.sets import NORMAL_FOLDER, DataOptions, DataSet, Split
from adedge.defects import DEFECT_KINDS, draw_defect, load_texture
from adedge.errors import DataError

TEXTURE_TRAIN_FRAMES = 256
TEXTURE_VAL_FRAMES = 32
TEXTURE_TEST_FRAMES = 80  # half clean, half with one defect


def texture_set(spec: str, options: DataOptions) -> DataSet:
    """Frames cut from three disjoint regions of one 512x512 texture photograph.

    Train: the top half; validation: the bottom-left quarter; test: the bottom-right quarter,
    so no test pixel was seen in training. Every other test frame gets one synthetic defect.
    """
    name = options.texture or ""
    texture = load_texture(name, DataError, f"texture '{name}' in '{spec}'")
    frame = options.frame
    if not 16 <= frame <= texture.shape[0] // 2:
        raise DataError(
            f"frame={frame} in '{spec}' does not fit the held-out quarter of the texture",
            f"use 16 <= frame <= {texture.shape[0] // 2}",
        )
    half = texture.shape[0] // 2
    n_train = options.limit or TEXTURE_TRAIN_FRAMES

    def rng(split: int) -> np.random.Generator:  # one stream per split: limit= moves no other
        return np.random.default_rng([options.seed, split])

    train = _random_frames(texture[:half, :], frame, n_train, rng(0))
    val = _random_frames(texture[half:, :half], frame, TEXTURE_VAL_FRAMES, rng(1))
    test_rng = rng(2)
    test_frames = _random_frames(texture[half:, half:], frame, TEXTURE_TEST_FRAMES, test_rng)
    test = _with_defects(test_frames, test_rng)
    normal = [options.texture or ""]
    return DataSet(
        spec=spec,
        name=f"texture-{options.texture}",
        colour="gray",
        class_names=normal,
        train=Split(train, np.zeros(len(train), np.int64)),
        val=Split(val, np.zeros(len(val), np.int64)),
        test=test,
        suggested_size=frame,
        protocol=(
            f"texture '{options.texture}' (scikit-image), {frame}px frames: train top half, "
            "val bottom-left quarter, test bottom-right quarter with synthetic defects"
        ),
        kind="textures",
    )


def _random_frames(
    region: np.ndarray, frame: int, count: int, rng: np.random.Generator
) -> list[np.ndarray]:
    rows = rng.integers(0, region.shape[0] - frame + 1, count)
    cols = rng.integers(0, region.shape[1] - frame + 1, count)
    return [region[r : r + frame, c : c + frame].copy() for r, c in zip(rows, cols, strict=True)]


def _with_defects(frames: list[np.ndarray], rng: np.random.Generator) -> Split:
    """Every odd frame gets one defect (kinds in turn); masks mark weight >= 0.5."""
    images, labels, kinds, masks = [], [], [], []
    for i, clean in enumerate(frames):
        if i % 2 == 0:
            images.append(clean)
            labels.append(0)
            kinds.append(NORMAL_FOLDER)
            masks.append(np.zeros(clean.shape, bool))
            continue
        kind = DEFECT_KINDS[(i // 2) % len(DEFECT_KINDS)]
        painted, weight = draw_defect(clean.astype(np.float32), kind, rng)
        images.append(np.clip(np.rint(painted), 0, 255).astype(np.uint8))
        labels.append(1)
        kinds.append(kind)
        masks.append(weight >= 0.5)
    names = [f"test_{i:03d}" for i in range(len(images))]
    return Split(images, np.asarray(labels, np.int64), names, kinds, masks)
