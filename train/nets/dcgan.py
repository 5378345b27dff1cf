"""DCGAN encoder and decoder (Radford et al.), the family Y-GAN's networks follow.

The pyramid halves the resolution with stride-2 4x4 convolutions and doubles the channels
until a 4x4 map remains, then a 4x4 valid convolution gives a (latent, 1, 1) code; the
decoder mirrors it with transposed convolutions (k4, s2, p1: no output padding, which
TensorRT handles well). Any power-of-two input from 16 px up works: 32x32 has three stride-2
blocks, 256x256 six.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def pyramid_channels(image_size: int, base_channels: int, max_channels: int | None) -> list[int]:
    """Channel widths of the stride-2 blocks, from image_size/2 down to 4x4."""
    if image_size < 16 or 2 ** int(math.log2(image_size)) != image_size:
        raise ValueError(f"DCGAN nets need a power-of-two image size >= 16, got {image_size}")
    blocks = int(math.log2(image_size)) - 2
    widths = [base_channels * 2**i for i in range(blocks)]
    return [min(w, max_channels) if max_channels else w for w in widths]


class DCGANEncoder(nn.Module):
    """x (N, C, S, S) -> code (N, latent); ``features`` is the last 4x4 pyramid map."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        latent_dim: int,
        base_channels: int = 64,
        max_channels: int | None = None,
    ) -> None:
        super().__init__()
        widths = pyramid_channels(image_size, base_channels, max_channels)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.pyramid = nn.Sequential(*layers)
        self.head = nn.Conv2d(widths[-1], latent_dim, 4, 1, 0, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pyramid(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pyramid(x)).flatten(1)


class DCGANDecoder(nn.Module):
    """code (N, latent) -> image (N, C, S, S) in [-1, 1] (tanh output)."""

    def __init__(
        self,
        image_size: int,
        out_channels: int,
        latent_dim: int,
        base_channels: int = 64,
        max_channels: int | None = None,
    ) -> None:
        super().__init__()
        widths = pyramid_channels(image_size, base_channels, max_channels)[::-1]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(widths[-1], out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), BatchNorm scales N(1, 0.02)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the gradient by -lambda backward (Ganin & Lempitsky)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:  # type: ignore[override]
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float) -> torch.Tensor:
    return GradientReversal.apply(x, strength)


def dann_ramp(progress: float, gamma: float = 10.0) -> float:
    """DANN schedule 2 / (1 + exp(-gamma p)) - 1: 0 at the start, about 1 at the end."""
    p = min(max(progress, 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0
