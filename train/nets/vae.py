"""Convolutional Gaussian encoders and decoders for a two-level (low/high) VAE.

PANDA-GAN's generator (Barker & Breckon, Fig. 2) has spatial latents like VQ-VAE-2's
bottom/top codes: E_low maps the image to a Gaussian posterior over a map z_low at 1/2^a of
the input side, E_high maps z_low to a posterior over z_high at a further 1/2^b; D_high
decodes z_high back to z_low's shape, and D_low decodes (D_high(z_high) + z_low) to the
image. The DCGAN blocks of :mod:`dcgan` end in a 1x1 code, so the stride-2 pyramids are
rebuilt here with a Gaussian head and no fixed 4x4 end. Downsampling: Conv k4/s2/p1 + BN +
LeakyReLU(0.2); upsampling: ConvTranspose k4/s2/p1 + BN + ReLU (no output padding:
docs/architecture.md, Precision); DCGAN initialisation is applied by the caller.
"""

from __future__ import annotations

import torch
from torch import nn


def down_blocks(c_in: int, widths: list[int], first_bn: bool = True) -> nn.Sequential:
    """One stride-2 block per width (each halves the side)."""
    layers: list[nn.Module] = []
    for i, c_out in enumerate(widths):
        layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False))
        if first_bn or i > 0:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        c_in = c_out
    return nn.Sequential(*layers)


def up_blocks(c_in: int, widths: list[int]) -> nn.Sequential:
    """One stride-2 transposed block per width (each doubles the side)."""
    layers: list[nn.Module] = []
    for c_out in widths:
        layers += [
            nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
        c_in = c_out
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """Input map -> posterior (mu, logvar), each (N, latent, S/2^k, S/2^k), k = len(widths).

    A 3x3 convolution turns the last block's features into the 2·latent posterior
    parameters; ``first_bn=False`` leaves BatchNorm out of the first block (DCGAN's rule for
    a block that reads raw pixels).
    """

    def __init__(self, in_channels: int, widths: list[int], latent: int, first_bn: bool) -> None:
        super().__init__()
        self.body = down_blocks(in_channels, widths, first_bn)
        self.head = nn.Conv2d(widths[-1], 2 * latent, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)  # keeps exp(logvar) finite early in training


class ConvDecoder(nn.Module):
    """Latent map (N, latent, s, s) -> (N, out, s·2^k, s·2^k), k = len(widths).

    A 3x3 convolution lifts the latent to the first width, the transposed blocks upsample,
    and the last one maps to ``out_channels``: with ``tanh`` (an image in [-1, 1]) or linear
    (a latent map for the residual skip)."""

    def __init__(self, latent: int, widths: list[int], out_channels: int, tanh: bool) -> None:
        super().__init__()
        self.lift = nn.Sequential(
            nn.Conv2d(latent, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.body = up_blocks(widths[0], widths[1:])
        last: list[nn.Module] = [nn.ConvTranspose2d(widths[-1], out_channels, 4, 2, 1)]
        if tanh:
            last.append(nn.Tanh())
        self.out = nn.Sequential(*last)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(self.lift(z)))


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma · eps (Kingma & Welling): a sample with a gradient to mu and sigma."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma²) || N(0, 1)), the mean over latent elements (not the sum: scale-free
    in the latent size, and the same reduction as the other loss terms)."""
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())).mean()
