"""Multi-scale structural similarity (Wang, Simoncelli & Bovik 2003) that exports to ONNX.

MS-SSIM compares two images at ``L`` scales: the contrast-structure term ``cs`` at the
``L - 1`` finer scales and the full SSIM (luminance x cs) at the coarsest, each a mean over
its map, combined as ``prod_j relu(term_j) ** w_j`` per channel, then averaged over the
channels. Between scales both images are 2x2 average-pooled (odd sides padded, zeros
counted, as the reference implementation ``pytorch_msssim`` does). Local statistics use a
Gaussian window applied as two 1-D depthwise ``conv2d`` with valid padding, so the whole
computation traces with the TorchScript exporter to Conv, AveragePool, Pow and ReduceProd
nodes with fixed kernels.

Settings by input size (docs/authors-code.md, IGD):

* sides >= 176 px: window 11, sigma 1.5, five scales with the standard weights
  ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)`` (the coarsest of five scales, side/16, must
  hold an 11-pixel window: 256 -> 16 does, 160 -> 10 does not);
* smaller inputs (IGD's 32 px patches): window 3, sigma 1.5, four scales, the first four
  standard weights renormalised to sum to one (``0.0517, 0.3295, 0.3462, 0.2726``);
* very small inputs (8 or 16 px in tiny tests) drop scales until the coarsest still holds
  the window: 16 px -> 3 scales, 8 px -> 2 scales (weights renormalised likewise).

32 px with window 3 is exactly the limit of ``pytorch_msssim``'s size assertion, which
insists on ``side > (window - 1) * 16`` whatever the number of scales (the authors' local
copy allowed ``>=``); our rule asks only that every scale's map be non-empty and smoothed.

``forward`` returns the per-sample value (N,) in float32 and, on request, a per-pixel
similarity map (N, 1, H, W): the scales' terms (cs maps at the finer scales, the SSIM map
at the coarsest, ReLU-clamped and averaged over channels) are padded back to their scale's
side by edge replication (a valid convolution trims ``window // 2`` pixels at each border),
upsampled bilinearly to (H, W) and averaged with the normalised scale weights. This
weighted arithmetic mean is the first-order form of the geometric product above (equal to
it when every term is 1, and for identical images); per pixel it avoids fractional powers
of values near zero, which are unstable and hostile to FP16.

Everything here is computed in float32 whatever the input dtype (docs/architecture.md,
Precision: variances and means of whole images are FP32 islands in an FP16 graph).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

STANDARD_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
LARGE_WINDOW = 11
SMALL_WINDOW = 3
SIGMA = 1.5


@dataclass(frozen=True)
class MSSSIMSettings:
    """Window side and sigma, per-scale weights (their count is the number of scales) and
    the stabilising constants K1, K2 of SSIM."""

    window: int = LARGE_WINDOW
    sigma: float = SIGMA
    weights: tuple[float, ...] = STANDARD_WEIGHTS
    k1: float = 0.01
    k2: float = 0.03

    @property
    def scales(self) -> int:
        return len(self.weights)


def scale_sides(size: int, scales: int) -> list[int]:
    """The image side at each scale: 2x2 pooling with odd sides padded gives ceil(s / 2)."""
    sides = [size]
    for _ in range(scales - 1):
        sides.append(-(-sides[-1] // 2))
    return sides


def max_scales(size: int, window: int, limit: int = len(STANDARD_WEIGHTS)) -> int:
    """The most scales (up to ``limit``) whose coarsest side still holds the window."""
    count = 0
    for side in scale_sides(size, limit):
        if side < window:
            break
        count += 1
    return count


def standard_weights(scales: int) -> tuple[float, ...]:
    """The first ``scales`` standard weights, renormalised to sum to one when truncated
    (all five are returned as published, as the reference uses them)."""
    if not 1 <= scales <= len(STANDARD_WEIGHTS):
        raise ValueError(f"MS-SSIM has 1 to {len(STANDARD_WEIGHTS)} scales, got {scales}")
    weights = STANDARD_WEIGHTS[:scales]
    if scales == len(STANDARD_WEIGHTS):
        return weights
    total = sum(weights)
    return tuple(w / total for w in weights)


def settings_for_size(
    size: int,
    window: int | None = None,
    scales: int | None = None,
    sigma: float = SIGMA,
    weights: tuple[float, ...] | None = None,
) -> MSSSIMSettings:
    """IGD's MS-SSIM settings for a square input of side ``size`` (see the module notes).

    ``window``/``scales``/``weights`` override the automatic choice; a combination whose
    coarsest scale cannot hold the window raises ValueError."""
    if window is None:
        window = LARGE_WINDOW if size >= LARGE_WINDOW * 16 else SMALL_WINDOW
    if window < 1 or window % 2 == 0:
        raise ValueError(f"the MS-SSIM window must be an odd side, got {window}")
    if weights is not None:
        scales = len(weights)
    limit = max_scales(size, window)
    if limit == 0:
        raise ValueError(f"a {size}px input is smaller than the {window}px MS-SSIM window")
    if scales is None:
        scales = min(limit, 5 if window == LARGE_WINDOW else 4)
    if scales > limit:
        raise ValueError(
            f"{scales} MS-SSIM scales need a side of at least {window * 2 ** (scales - 1)}px "
            f"with a {window}px window; a {size}px input allows {limit}"
        )
    chosen = tuple(float(w) for w in weights) if weights is not None else standard_weights(scales)
    return MSSSIMSettings(window=window, sigma=sigma, weights=chosen)


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps centred on the middle one."""
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    kernel = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (kernel / kernel.sum()).float()


class MSSSIM(nn.Module):
    """MS-SSIM between image batches (N, C, H, W) whose values span ``data_range``.

    The kernels are non-persistent buffers: derived from the settings, not learned, so
    they stay out of checkpoints and become constants in the exported graph.
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        settings: MSSSIMSettings | None = None,
        data_range: float = 1.0,
    ) -> None:
        super().__init__()
        settings = settings or settings_for_size(image_size)
        limit = max_scales(image_size, settings.window)
        if settings.scales > limit:
            raise ValueError(
                f"{settings.scales} MS-SSIM scales with a {settings.window}px window do not "
                f"fit a {image_size}px input (at most {limit})"
            )
        self.settings = settings
        self.channels = channels
        self.image_size = image_size
        self.sides = scale_sides(image_size, settings.scales)
        self.c1 = (settings.k1 * data_range) ** 2
        self.c2 = (settings.k2 * data_range) ** 2
        taps = gaussian_window(settings.window, settings.sigma)
        stacked = 5 * channels  # x, y, x², y², xy filtered in one grouped convolution
        self.register_buffer(
            "window_rows", taps.view(1, 1, -1, 1).repeat(stacked, 1, 1, 1), persistent=False
        )
        self.register_buffer(
            "window_cols", taps.view(1, 1, 1, -1).repeat(stacked, 1, 1, 1), persistent=False
        )
        weights = torch.tensor(settings.weights, dtype=torch.float32)
        self.register_buffer("weights", weights, persistent=False)
        self.register_buffer("map_weights", weights / weights.sum(), persistent=False)

    def _blur(self, stacked: torch.Tensor) -> torch.Tensor:
        groups = stacked.shape[1]
        blurred = F.conv2d(stacked, self.window_rows, groups=groups)
        return F.conv2d(blurred, self.window_cols, groups=groups)

    def _terms(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(SSIM map, cs map), each (N, C, h, w) over the valid window positions."""
        c = self.channels
        moments = self._blur(torch.cat([x, y, x * x, y * y, x * y], dim=1))
        mu_x, mu_y = moments[:, :c], moments[:, c : 2 * c]
        var_x = moments[:, 2 * c : 3 * c] - mu_x * mu_x
        var_y = moments[:, 3 * c : 4 * c] - mu_y * mu_y
        cov = moments[:, 4 * c :] - mu_x * mu_y
        cs = (2.0 * cov + self.c2) / (var_x + var_y + self.c2)
        luminance = (2.0 * mu_x * mu_y + self.c1) / (mu_x * mu_x + mu_y * mu_y + self.c1)
        return luminance * cs, cs

    def _pixel_map(self, maps: list[torch.Tensor]) -> torch.Tensor:
        pad = self.settings.window // 2
        full = (self.image_size, self.image_size)
        total: torch.Tensor | None = None
        for j, term in enumerate(maps):
            term = term.mean(dim=1, keepdim=True)
            if pad:
                term = F.pad(term, (pad, pad, pad, pad), mode="replicate")
            if self.sides[j] != self.image_size:
                term = F.interpolate(term, size=full, mode="bilinear", align_corners=False)
            weighted = self.map_weights[j] * term
            total = weighted if total is None else total + weighted
        assert total is not None
        return total

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, with_map: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Per-sample MS-SSIM (N,) in [0, 1]; with ``with_map`` also the (N, 1, H, W)
        per-pixel similarity map described in the module notes."""
        if not torch.jit.is_tracing() and tuple(x.shape[-2:]) != (self.image_size,) * 2:
            raise ValueError(
                f"this MS-SSIM is set up for {self.image_size}px inputs, got {tuple(x.shape)}"
            )
        x, y = x.to(torch.float32), y.to(torch.float32)
        terms: list[torch.Tensor] = []
        maps: list[torch.Tensor] = []
        last = self.settings.scales - 1
        for j in range(self.settings.scales):
            ssim_map, cs_map = self._terms(x, y)
            term = ssim_map if j == last else cs_map
            terms.append(torch.relu(term.flatten(2).mean(dim=2)))
            if with_map:
                maps.append(torch.relu(term))
            if j < last:
                padding = self.sides[j] % 2
                x = F.avg_pool2d(x, kernel_size=2, padding=padding)
                y = F.avg_pool2d(y, kernel_size=2, padding=padding)
        stacked = torch.stack(terms, dim=0)  # (scales, N, C)
        per_channel = torch.prod(stacked ** self.weights.view(-1, 1, 1), dim=0)
        values = per_channel.mean(dim=1)
        if not with_map:
            return values
        return values, self._pixel_map(maps)


def mean_absolute_error(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample mean |x - y| (N,) in float32: a mean, never a sum (FP16-safe)."""
    return (x.to(torch.float32) - y.to(torch.float32)).abs().flatten(1).mean(dim=1)


__all__ = [
    "MSSSIM",
    "MSSSIMSettings",
    "STANDARD_WEIGHTS",
    "gaussian_window",
    "max_scales",
    "mean_absolute_error",
    "settings_for_size",
    "standard_weights",
]
