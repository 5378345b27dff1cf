"""Residual convolution blocks and the encoder trunk / decoder built from them.

These are the blocks of CBiGAN's Fig. 3 as the authors' code defines them
(docs/authors-code.md, CBiGAN):

* ``d_block(n)``: a 1x1 convolution on the skip path; on the main path 3x3 conv -> LeakyReLU
  -> 3x3 conv -> LeakyReLU -> 1x1 conv; the two paths are added, activated, and (except in
  the last block of a trunk) average-pooled 2x2.
* ``g_block(n)``: bilinear x2 upsampling (optional), then the same residual body without
  pooling.

Widths follow the authors' ``channels`` multiplier: ``width`` x (1, 2, 3, 4, 8, 16), i.e.
3/6/9/12/24/48 at the paper's ``width=3``. No normalisation layers (the paper's default).

Two generalisations, so that any power-of-two side from 16 up works with the same six
blocks (the authors' code fixes 128 for objects and 64 for texture patches):

* the trunk stops pooling once the map is ``min_side`` (2) wide: 128 -> 4x4 and 64 -> 2x2
  exactly as the authors' networks, 32 and 16 -> 2x2 with the last blocks unpooled;
* the decoder always starts from a ``start_side`` (2) map and only its last
  log2(size / 2) blocks upsample: 128 upsamples in all six (the authors' objects), 64 skips
  the first (their ``upsample_first=False`` textures), 32 skips two, and so on. Sides above
  128 prepend extra blocks at the widest width.

Every convolution and dense layer has a bias: the authors' ``use_bias = not bn`` meant
"bias when no normalisation" but evaluated False for bn='none' (NOTES §2 quirk), which we do
not copy. Weights use Glorot-uniform initialisation and zero biases, the Keras defaults the
paper's models were trained with.
"""

from __future__ import annotations

import math

import torch
from torch import nn

WIDTH_STEPS: tuple[int, ...] = (1, 2, 3, 4, 8, 16)


def residual_widths(width: int) -> list[int]:
    """Encoder widths, narrow to wide: ``width`` x (1, 2, 3, 4, 8, 16)."""
    if width < 1:
        raise ValueError(f"width multiplier must be >= 1, got {width}")
    return [width * step for step in WIDTH_STEPS]


def check_side(side: int) -> int:
    if side < 16 or 2 ** int(math.log2(side)) != side:
        raise ValueError(f"residual nets need a power-of-two side >= 16, got {side}")
    return side


class ResidualBody(nn.Module):
    """act(skip(x) + main(x)): the shared body of ``d_block`` and ``g_block``."""

    def __init__(self, c_in: int, c_out: int, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.skip = nn.Conv2d(c_in, c_out, 1)
        self.main = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.LeakyReLU(negative_slope),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            nn.LeakyReLU(negative_slope),
            nn.Conv2d(c_out, c_out, 1),
        )
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.skip(x) + self.main(x))


class DBlock(nn.Module):
    """``d_block``: residual body, then 2x2 average pooling when ``pool``."""

    def __init__(self, c_in: int, c_out: int, pool: bool, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.body = ResidualBody(c_in, c_out, negative_slope)
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x))


class GBlock(nn.Module):
    """``g_block``: bilinear x2 upsampling when ``upsample``, then the residual body."""

    def __init__(self, c_in: int, c_out: int, upsample: bool, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.upsample = (
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            if upsample
            else nn.Identity()
        )
        self.body = ResidualBody(c_in, c_out, negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.upsample(x))


def d_block(c_in: int, c_out: int, pool: bool = True, negative_slope: float = 0.2) -> DBlock:
    return DBlock(c_in, c_out, pool, negative_slope)


def g_block(c_in: int, c_out: int, upsample: bool = True, negative_slope: float = 0.2) -> GBlock:
    return GBlock(c_in, c_out, upsample, negative_slope)


def pooling_schedule(side: int, blocks: int, min_side: int = 2) -> list[bool]:
    """Which d_blocks pool: every block but the last, until the map is ``min_side`` wide."""
    schedule = []
    for index in range(blocks):
        pool = index < blocks - 1 and side > min_side
        schedule.append(pool)
        side = side // 2 if pool else side
    return schedule


def upsampling_schedule(side: int, blocks: int, start_side: int = 2) -> list[bool]:
    """Which g_blocks upsample: the last log2(side / start_side) of them."""
    ups = int(math.log2(side // start_side))
    if ups > blocks:
        raise ValueError(f"{blocks} blocks cannot upsample {start_side} to {side}")
    return [index >= blocks - ups for index in range(blocks)]


class ResidualTrunk(nn.Module):
    """Stacked d_blocks: image (N, C, S, S) -> map (N, widths[-1], s, s).

    CBiGAN's encoder and the critic's image branch share this architecture (not weights).
    """

    def __init__(
        self, in_channels: int, side: int, widths: list[int], negative_slope: float = 0.2
    ) -> None:
        super().__init__()
        schedule = pooling_schedule(check_side(side), len(widths))
        c_ins = [in_channels, *widths[:-1]]
        self.blocks = nn.Sequential(
            *(
                DBlock(c_in, c_out, pool, negative_slope)
                for c_in, c_out, pool in zip(c_ins, widths, schedule, strict=True)
            )
        )
        self.out_side = side // 2 ** sum(schedule)
        self.out_channels = widths[-1]

    @property
    def out_features(self) -> int:
        return self.out_channels * self.out_side**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ResidualDecoder(nn.Module):
    """code (N, latent) -> Dense -> (widths[0], 2, 2) -> g_blocks -> 1x1 conv -> tanh.

    ``widths`` run wide to narrow (CBiGAN: 48, 24, 12, 9, 6, 3 at width 3). The output is
    (N, out_channels, side, side) in [-1, 1].
    """

    def __init__(
        self,
        latent_dim: int,
        out_channels: int,
        side: int,
        widths: list[int],
        negative_slope: float = 0.2,
        start_side: int = 2,
    ) -> None:
        super().__init__()
        check_side(side)
        extra = max(int(math.log2(side // start_side)) - len(widths), 0)
        widths = [widths[0]] * extra + list(widths)
        self.start = (widths[0], start_side, start_side)
        self.dense = nn.Linear(latent_dim, widths[0] * start_side**2)
        schedule = upsampling_schedule(side, len(widths), start_side)
        c_ins = [widths[0], *widths[:-1]]
        self.blocks = nn.Sequential(
            *(
                GBlock(c_in, c_out, up, negative_slope)
                for c_in, c_out, up in zip(c_ins, widths, schedule, strict=True)
            )
        )
        self.out = nn.Conv2d(widths[-1], out_channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(z).view(z.shape[0], *self.start)
        return torch.tanh(self.out(self.blocks(x)))


def init_glorot(module: nn.Module) -> None:
    """Keras defaults: Glorot-uniform weights, zero biases, for every conv and dense layer."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
