"""Training inputs cut from prepared images: random (rotated, flipped) crops and grid tiles.

A tiled stage trains on random ``tile``-sized crops of the resized images (CBiGAN's texture
patches, IGD's local model) and is validated on the same grid of tiles the runtime scores
(``adedge.runtime.tiling``: reflect-padded at the bottom/right to the smallest size that
tiles at ``stride`` cover exactly, row-major order). The geometry here mirrors the runtime's
in torch so training never imports the runtime.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from adedge.preprocess import tile_count
from adedge.train.methods.base import StagePlan, TrainView


def chunks(images: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """``images`` in consecutive slices of at most ``size`` (scoring without holding every
    activation at once)."""
    for start in range(0, len(images), size):
        yield images[start : start + size]


def padded_length(length: int, tile: int, stride: int) -> int:
    """The runtime's grown side: ``ceil((L - tile) / stride) * stride + tile``."""
    if length <= tile:
        return tile
    return math.ceil((length - tile) / stride) * stride + tile


def grid_tiles(images: torch.Tensor, plan: StagePlan) -> torch.Tensor:
    """(N·T, C, t, t): every image's tiles in row-major order, images one after another."""
    if not plan.tiled:
        return images
    tile, stride = plan.tile, plan.stride or plan.tile
    height, width = images.shape[-2:]
    pad_h = padded_length(height, tile, stride) - height
    pad_w = padded_length(width, tile, stride) - width
    if pad_h or pad_w:
        mode = {"constant": "constant", "replicate": "replicate"}.get(plan.padding, "reflect")
        images = F.pad(images, (0, pad_w, 0, pad_h), mode=mode)
    channels = images.shape[1]
    patches = images.unfold(2, tile, stride).unfold(3, tile, stride)  # N, C, rows, cols, t, t
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, channels, tile, tile)


def tiles_per_image(size: int, plan: StagePlan) -> int:
    """Tiles of a ``size`` x ``size`` image, as the runtime's plan counts them."""
    if not plan.tiled:
        return 1
    return tile_count((size, size), plan.tile, plan.stride or plan.tile)


def random_views(images: torch.Tensor, view: TrainView) -> torch.Tensor:
    """One random view per image: a crop of side ``view.crop`` (the whole image if None) at
    a random place, rotated by a random angle in [-r, r] degrees about its centre with the
    image reflected beyond its border, then flipped left-right with probability 1/2 if
    ``view.hflip``. Draws from torch's global generator, so a resumed run repeats them."""
    n, _, height, width = images.shape
    side = view.crop or min(height, width)
    if view.rotation_degrees:
        out = _rotated_crops(images, side, view.rotation_degrees)
    elif side < height or side < width:
        out = _window_crops(images, side)
    else:
        out = images
    if view.hflip:
        flip = torch.rand(n, device=images.device) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out


def _window_crops(images: torch.Tensor, side: int) -> torch.Tensor:
    """Exact pixel windows at random integer places (no resampling)."""
    n, _, height, width = images.shape
    tops = torch.randint(0, height - side + 1, (n,)).tolist()
    lefts = torch.randint(0, width - side + 1, (n,)).tolist()
    return torch.stack(
        [img[:, t : t + side, x : x + side] for img, t, x in zip(images, tops, lefts, strict=True)]
    )


def _rotated_crops(images: torch.Tensor, side: int, degrees: float) -> torch.Tensor:
    n, channels, height, width = images.shape
    device = images.device
    half_h, half_w = side / height, side / width  # crop half-size in normalised coordinates
    cx = (torch.rand(n, device=device) * 2 - 1) * (1 - half_w)
    cy = (torch.rand(n, device=device) * 2 - 1) * (1 - half_h)
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output grid (u, v) in [-1, 1] -> input coordinates: centre + R(angle) · (u·half_w, v·half_h)
    theta = torch.stack(
        [
            torch.stack([cos * half_w, -sin * half_h, cx], dim=1),
            torch.stack([sin * half_w, cos * half_h, cy], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [n, channels, side, side], align_corners=False)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def iterate_inputs(
    images: torch.Tensor, plan: StagePlan, batch_size: int, device: torch.device
) -> Iterator[torch.Tensor]:
    """Every training input once, in order, at the stage's input size (for E-steps)."""
    per_chunk = max(1, batch_size // tiles_per_image(images.shape[-1], plan))
    for part in chunks(images, per_chunk):
        yield grid_tiles(part, plan).to(device)
