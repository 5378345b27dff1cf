"""A DCGAN-like convolutional auto-encoder whose code comes from a fully connected layer.

``train/nets/dcgan.py`` ends its encoder in a 4x4 valid convolution and uses ReLU in the
decoder; DDR-ID's Table 1 instead ends the encoder in an FC layer over the last feature map,
uses BatchNorm + LeakyReLU(0.2) after every decoder deconvolution, and defines 32 px nets
for 28 and 32 px inputs. These blocks express that family generically:

* ``ConvEncoder``: ``levels + 1`` stride-2 4x4 convolutions (k4, s2, p1: each halves the
  side, rounding down), BatchNorm + LeakyReLU after all but the first (which has no
  BatchNorm), then Flatten -> FC to the code. Widths ``base * 2**i``.
* ``ConvDecoder``: code as a 1x1 map -> DeConv k4 s1 to 4x4 -> ``levels`` DeConv k4 s2 p1,
  each + BatchNorm + LeakyReLU, then a 3x3 output convolution and tanh. Its native side is
  ``4 * 2**levels``; a smaller requested side is a centre crop of it (28 px MNIST inside the
  32 px net of Table 1).

``levels = max(3, ceil(log2(side)) - 2)``: 3 for 16-32 px inputs (Table 1: encoder widths
64-128-256-512, decoder 512-256-128-64), 4 for 64 px and so on, keeping DCGAN's doubling.

``bias``/``affine``: with ``bias=False`` the convolutions and the FC layer have no bias and
BatchNorm has no learned shift/scale. Deep SVDD (Ruff et al., Prop. 2), whose one-class loss
DDR-ID adopts, shows that bias terms let a network minimising the distance to a centre
collapse to a constant map; encoders that feed such a loss use ``bias=False``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def levels_for(image_size: int) -> int:
    """Number of stride-2 up-sampling stages of the decoder (encoder: one more conv)."""
    if image_size < 16:
        raise ValueError(f"the conv auto-encoder needs inputs of at least 16 px, got {image_size}")
    return max(3, math.ceil(math.log2(image_size)) - 2)


def widths_for(levels: int, base_channels: int, max_channels: int | None) -> list[int]:
    """Encoder widths, shallow to deep: base, 2 base, ... (levels + 1 of them)."""
    widths = [base_channels * 2**i for i in range(levels + 1)]
    return [min(w, max_channels) if max_channels else w for w in widths]


def encoded_side(image_size: int, convs: int) -> int:
    side = image_size
    for _ in range(convs):
        side = (side + 2 - 4) // 2 + 1
    if side < 1:
        raise ValueError(f"{convs} stride-2 convolutions do not fit a {image_size} px input")
    return side


class ConvEncoder(nn.Module):
    """x (N, C, S, S) -> code (N, latent)."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        latent_dim: int,
        base_channels: int = 64,
        max_channels: int | None = None,
        bias: bool = True,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        widths = widths_for(levels_for(image_size), base_channels, max_channels)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 4, 2, 1, bias=bias),
            nn.LeakyReLU(negative_slope),
        ]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out, affine=bias),
                nn.LeakyReLU(negative_slope),
            ]
        self.features = nn.Sequential(*layers)
        side = encoded_side(image_size, len(widths))
        self.head = nn.Linear(widths[-1] * side * side, latent_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """code (N, latent) -> image (N, C, S, S) in [-1, 1] (tanh output)."""

    def __init__(
        self,
        image_size: int,
        out_channels: int,
        latent_dim: int,
        base_channels: int = 64,
        max_channels: int | None = None,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        levels = levels_for(image_size)
        widths = widths_for(levels, base_channels, max_channels)[::-1]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.LeakyReLU(negative_slope),
        ]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(negative_slope),
            ]
        layers += [nn.Conv2d(widths[-1], out_channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        native = 4 * 2**levels
        self.crop = (native - image_size) // 2
        self.image_size = image_size

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z[:, :, None, None])
        if self.crop or out.shape[-1] != self.image_size:
            c, s = self.crop, self.image_size
            out = out[:, :, c : c + s, c : c + s]
        return out


class MLPDiscriminator(nn.Module):
    """code (N, latent) -> logit (N,): [FC -> BatchNorm -> ReLU] per hidden width, FC -> 1.

    Returns the logit; the sigmoid of the paper's last block lives in the loss
    (``logsigmoid``), which is the same function computed without overflow.
    """

    def __init__(self, latent_dim: int, widths: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = latent_dim
        for width in widths:
            layers += [nn.Linear(c_in, width), nn.BatchNorm1d(width), nn.ReLU()]
            c_in = width
        layers.append(nn.Linear(c_in, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(1)


def init_conv_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), affine BatchNorm scales N(1, 0.02)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
        elif isinstance(layer, nn.BatchNorm2d) and layer.affine:
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)
