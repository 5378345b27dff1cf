"""Frames as the detector and every sink take them, and the network batch they become.

``conform_image`` says what a frame from any source (a custom one, a camera driver) is
converted into or rejected for: uint8 grey (H, W) or BGR (H, W, 3).

:func:`to_batch` is the runtime's one way from frames (camera and video frames in BGR order,
or a data set's RGB and grey images) to a stage's input batch: one float32 array allocated
per call, every frame's rows (one for a whole-frame stage, its tiles for a tiled one) written
straight into it by the fused C++ kernel (:mod:`adedge.runtime.kernels`), which reads BGR
itself, so no colour-converted copy of a frame is made first. Where the kernel is not built
or does not cover a stage (``kernels.fused_supported``, non-uint8 images, a whole-frame
input that is not square) the numpy twins write the same numbers: the steps of
:mod:`adedge.preprocess`, which training uses too. :func:`run_in_chunks` hands a batch to a
backend in pieces it accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from adedge.preprocess import InputSpec, prepare_image, uint16_to_uint8
from adedge.runtime import kernels
from adedge.runtime.tiling import TilingPlan, whole_frame_plan


def conform_image(image: object) -> tuple[np.ndarray | None, tuple[str, ...], str | None]:
    """Make a frame's image what the detector and sinks expect: uint8 grey (H, W) or BGR
    (H, W, 3). Returns (image, conversions made, reason for rejection or None).

    Converted (each counted by reason): (H, W, 1) to grey, BGRA to BGR (alpha dropped),
    uint16 to uint8 (the high byte), float in [0, 1] to uint8 (``* 255``). Rejected: an empty
    image, 2 or more than 4 channels, other dimensions, float outside [0, 1] (or not finite),
    any other dtype. A custom source or a camera driver can hand over any of these; guessing
    a meaning for the rejected ones would score garbage.
    """
    if not isinstance(image, np.ndarray) or image.size == 0:
        return None, (), "empty"
    if image.ndim not in (2, 3):
        return None, (), f"{image.ndim} dimensions"
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in (1, 3, 4):
        return None, (), f"{channels} channels"
    floating = np.issubdtype(image.dtype, np.floating)
    if floating and not (np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0):
        return None, (), "float outside [0, 1]"
    if not floating and image.dtype not in (np.uint8, np.uint16):
        return None, (), f"dtype {image.dtype}"
    converted: list[str] = []
    if image.ndim == 3 and channels == 1:
        image = image[:, :, 0]
        converted.append("1 channel to grey")
    elif channels == 4:
        image = image[:, :, :3]
        converted.append("BGRA to BGR")
    if image.dtype == np.uint16:
        image = uint16_to_uint8(image)
        converted.append("uint16 to uint8")
    elif floating:
        image = (image * 255.0 + 0.5).astype(np.uint8)
        converted.append("float to uint8")
    return np.ascontiguousarray(image), tuple(converted), None


def batch_rows(plans: Sequence[TilingPlan | None]) -> list[int]:
    """Rows each image takes in a batch: 1 for a whole-frame stage (None), else its tiles."""
    return [1 if plan is None else plan.count for plan in plans]


def to_batch(
    images: Sequence[np.ndarray],
    spec: InputSpec,
    plans: Sequence[TilingPlan | None],
    order: str = "rgb",
    dtype=np.float32,
) -> np.ndarray:
    """The (rows, C, H, W) input batch of one stage for ``images``, in the images' order.

    ``plans[i]`` is image i's tiling plan, or None where the stage scores the whole frame
    (resized to the spec's input). ``order`` is the channel order of 3- and 4-channel images:
    "bgr" for camera and video frames, "rgb" for a data set's images; grey images have none.
    """
    rows = batch_rows(plans)
    batch = np.empty((sum(rows), spec.channels, spec.height, spec.width), dtype)
    start = 0
    for image, plan, count in zip(images, plans, rows, strict=True):
        into = batch[start : start + count]
        if plan is not None:
            kernels.preprocess_tiles(image, plan, spec, into, order)
        elif spec.height == spec.width:  # a one-tile plan: the kernel covers whole frames too
            frame_plan = whole_frame_plan(tuple(image.shape[:2]), spec.height)
            kernels.preprocess_tiles(image, frame_plan, spec, into, order)
        else:  # the kernel's tiles are square
            prepare_image(image, spec, into[0], order)
        start += count
    return batch


def run_in_chunks(
    run: Callable[[Any], Mapping[str, np.ndarray]],
    batch: np.ndarray | Sequence,
    chunk: int | None,
    names: Iterable[str] | None = None,
) -> dict[str, np.ndarray]:
    """``run`` on ``batch`` in slices of at most ``chunk`` rows (at once when ``chunk`` is
    None or 0, or the batch fits), its outputs ``names`` (default: all it returns) joined
    again along the first axis. For a backend's ``max_batch``, or to bound memory."""
    if not chunk or len(batch) <= chunk:
        out = run(batch)
        return {name: out[name] for name in (out if names is None else names)}
    parts = [run(batch[i : i + chunk]) for i in range(0, len(batch), chunk)]
    keys = list(parts[0] if names is None else names)
    return {name: np.concatenate([part[name] for part in parts]) for name in keys}
