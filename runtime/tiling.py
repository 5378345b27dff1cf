"""Tiling plans: how a frame becomes one stage's batch of tiles, and how tile results come back.

A plan is computed once per (frame size, stage) from the card's :class:`TilingSpec` and
then reused for every frame of that size:

1. the frame is resized to ``resize_to`` (the same resize policy as training);
2. the resized frame is padded at the bottom and right, with the card's padding mode, to
   the smallest size that tiles of side ``tile`` placed every ``stride`` pixels cover
   exactly: per axis ``padded = ceil((L - tile) / stride) * stride + tile`` (one tile when
   ``L <= tile``);
3. tiles are cut in row-major order (left to right, then top to bottom): tile ``i`` sits
   at ``origins[i]`` and at grid cell ``divmod(i, cols)``.

The tiles form the backend's batch. Tile scores reduce to one frame score by ``max``
(IGD's local max-pooling over its patch-score grid; CBiGAN's max over texture tiles) or
``mean``; tile anomaly maps are stitched back with overlap averaging and cropped to the
resized frame, then resized to the frame.

Compared with anomalib's ``Tiler`` (``anomalib.data.utils.tiler``):

* Same geometry: ``tile_size`` and ``stride`` with ``stride <= tile_size`` (anomalib raises
  ``StrideSizeError`` otherwise; our card reader rejects it), the same grown size
  ``ceil((L - T) / S) * S + T``, so the remainder is never dropped, and the same row-major
  order of tiles within an image.
* Padding: anomalib grows the image either with zeros at the bottom/right
  (``mode="padding"``) or by stretching it (``mode="interpolation"``). Zeros next to a
  texture are a synthetic defect on the frame's border, and stretching changes the
  texture's scale the model was trained on, so we pad with the card's mode, ``reflect`` by
  default for textures (``constant`` = anomalib's zero padding, ``replicate`` also allowed).
  A resized frame smaller than one tile is padded up to the tile; anomalib raises.
* Stitching: like anomalib's ``untile`` we average overlapping tiles and crop the padding
  away; there is no ``remove_border_count``.
* Scores: anomalib's ``Tiler`` has no score reduction, and its tiled-ensemble joiner
  averages tile scores. We take the max by default: a mean over 225 tiles dilutes one
  defective tile 225-fold, the max keeps it. ``mean`` stays available through the card.

numpy and OpenCV only: the runtime never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from adedge.bundle import PADDINGS, REDUCTIONS, TilingSpec
from adedge.preprocess import resize, tile_axis

ORDER = "row-major"
_NUMPY_PAD = {"reflect": "reflect", "constant": "constant", "replicate": "edge"}


@dataclass(frozen=True)
class TilingPlan:
    """Geometry shared by every frame of one size for one stage (hashable, so cacheable)."""

    frame_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    padded_hw: tuple[int, int]
    tile: int
    stride: int
    padding: str
    grid: tuple[int, int]
    origins: tuple[tuple[int, int], ...]

    @property
    def count(self) -> int:
        return len(self.origins)


def plan_tiles(frame_hw: tuple[int, int], tiling: TilingSpec) -> TilingPlan:
    """The tiling plan for frames of ``frame_hw`` (height, width) under the card's spec."""
    height, width = (int(v) for v in frame_hw)
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {frame_hw}")
    tile, stride = int(tiling.tile), int(tiling.stride)
    if tile <= 0 or not 0 < stride <= tile:
        raise ValueError(f"need 0 < stride <= tile, got tile {tile}, stride {stride}")
    if tiling.padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got '{tiling.padding}'")
    if tiling.order != ORDER:
        raise ValueError(f"only '{ORDER}' tile order is supported, got '{tiling.order}'")
    resized = (int(tiling.resize_to[0]), int(tiling.resize_to[1]))
    rows, padded_h = tile_axis(resized[0], tile, stride)
    cols, padded_w = tile_axis(resized[1], tile, stride)
    origins = tuple((r * stride, c * stride) for r in range(rows) for c in range(cols))
    return TilingPlan(
        frame_hw=(height, width),
        resized_hw=resized,
        padded_hw=(padded_h, padded_w),
        tile=tile,
        stride=stride,
        padding=tiling.padding,
        grid=(rows, cols),
        origins=origins,
    )


@lru_cache(maxsize=64)
def whole_frame_plan(frame_hw: tuple[int, int], side: int) -> TilingPlan:
    """A whole-frame stage with a square input as a plan of one tile: the frame resized to
    ``side`` x ``side``, nothing padded. The tile kernels then prepare whole frames too."""
    return TilingPlan(
        frame_hw=(int(frame_hw[0]), int(frame_hw[1])),
        resized_hw=(side, side),
        padded_hw=(side, side),
        tile=side,
        stride=side,
        padding="constant",  # never used: nothing is padded
        grid=(1, 1),
        origins=((0, 0),),
    )


def pad_to_plan(image_hwc: np.ndarray, plan: TilingPlan) -> np.ndarray:
    """Resize a frame to the plan's size and pad it bottom/right so the tiles cover it."""
    image = image_hwc[:, :, None] if image_hwc.ndim == 2 else image_hwc
    if image.shape[:2] != plan.frame_hw:
        raise ValueError(f"frame is {image.shape[:2]} but the plan is for {plan.frame_hw}")
    image = resize(image, *plan.resized_hw)
    pad_h = plan.padded_hw[0] - plan.resized_hw[0]
    pad_w = plan.padded_hw[1] - plan.resized_hw[1]
    if pad_h == 0 and pad_w == 0:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=_NUMPY_PAD[plan.padding])


def cut_tiles(image_hwc: np.ndarray, plan: TilingPlan) -> np.ndarray:
    """(N, tile, tile, C) tiles in row-major order, of the resized and padded frame."""
    return tiles_from_padded(pad_to_plan(image_hwc, plan), plan)


def tiles_from_padded(
    padded: np.ndarray,
    plan: TilingPlan,
    channels_first: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Row-major tiles of an already padded frame: (N, t, t, C) from (Hp, Wp, C), or
    (N, C, t, t) from (C, Hp, Wp) with ``channels_first`` (a normalised NCHW frame); copied
    straight into ``out`` (of that shape, any dtype the values cast to) when given."""
    axes = (1, 2) if channels_first else (0, 1)
    if tuple(padded.shape[a] for a in axes) != plan.padded_hw:
        raise ValueError(f"padded frame is {padded.shape}, the plan needs {plan.padded_hw}")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (plan.tile, plan.tile), axes)
    if channels_first:  # (C, rows, cols, t, t) -> (rows, cols, C, t, t)
        windows = windows[:, :: plan.stride, :: plan.stride].transpose(1, 2, 0, 3, 4)
        shape = (-1, padded.shape[0], plan.tile, plan.tile)
    else:  # (rows, cols, C, t, t) -> (rows, cols, t, t, C)
        windows = windows[:: plan.stride, :: plan.stride].transpose(0, 1, 3, 4, 2)
        shape = (-1, plan.tile, plan.tile, padded.shape[2])
    if out is None:
        return np.ascontiguousarray(windows).reshape(shape)
    if out.flags.c_contiguous:  # a view of out in the windows' layout: one copy, no temporary
        np.copyto(out.reshape(windows.shape), windows)
    else:
        out[...] = np.ascontiguousarray(windows).reshape(out.shape)
    return out


def _check_count(values: np.ndarray, plan: TilingPlan, what: str) -> None:
    if len(values) != plan.count:
        raise ValueError(f"got {len(values)} {what} but the plan has {plan.count} tiles")


def score_grid(tile_scores: np.ndarray, plan: TilingPlan) -> np.ndarray:
    """Tile scores as the (rows, cols) patch-score grid."""
    scores = np.asarray(tile_scores).reshape(-1)
    _check_count(scores, plan, "tile scores")
    return scores.reshape(plan.grid)


def reduce_scores(tile_scores: np.ndarray, plan: TilingPlan, how: str = "max") -> float:
    """One frame score from its tile scores: max (local max-pooling) or mean."""
    if how not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got '{how}'")
    grid = score_grid(tile_scores, plan)
    return float(grid.max() if how == "max" else grid.mean(dtype=np.float64))


@lru_cache(maxsize=32)
def _coverage(plan: TilingPlan) -> np.ndarray:
    """How many tiles cover each pixel of the padded frame (>= 1 everywhere)."""
    count = np.zeros(plan.padded_hw, np.float64)
    for y, x in plan.origins:
        count[y : y + plan.tile, x : x + plan.tile] += 1.0
    count.setflags(write=False)
    return count


def _tile_maps(tile_maps: np.ndarray, plan: TilingPlan) -> np.ndarray:
    """(N, tile, tile) float32 from (N, t, t) or (N, 1, t, t); a model whose map is not
    tile-sized (tiles resized to the stage input) gets its maps resized back to the tile."""
    maps = np.asarray(tile_maps, np.float32)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3:
        raise ValueError(f"tile maps must be (N, h, w) or (N, 1, h, w), got {tile_maps.shape}")
    _check_count(maps, plan, "tile maps")
    if maps.shape[1:] != (plan.tile, plan.tile):
        maps = np.stack([resize_map(m, (plan.tile, plan.tile)) for m in maps])
    return maps


def stitch(tile_maps: np.ndarray, plan: TilingPlan) -> np.ndarray:
    """(H, W) float32 map of the resized frame: overlapping tiles averaged, padding cropped.

    Sums run in float64 so that many overlapping tiles (small strides) lose no precision.
    """
    maps = _tile_maps(tile_maps, plan)
    total = np.zeros(plan.padded_hw, np.float64)
    for (y, x), tile_map in zip(plan.origins, maps, strict=True):
        total[y : y + plan.tile, x : x + plan.tile] += tile_map
    total /= _coverage(plan)
    height, width = plan.resized_hw
    return total[:height, :width].astype(np.float32)


def resize_map(amap: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """A 2-D float32 map resized (bilinear) to ``size_hw``; unchanged if already that size."""
    amap = np.asarray(amap, np.float32)
    if amap.shape == tuple(size_hw):
        return amap
    return cv2.resize(amap, (int(size_hw[1]), int(size_hw[0])), interpolation=cv2.INTER_LINEAR)


def to_frame_size(amap: np.ndarray, plan: TilingPlan) -> np.ndarray:
    """A stitched map (resized-frame size) brought to the original frame's size."""
    return resize_map(amap, plan.frame_hw)
