"""A fine-grained (FGVC) real/fake critic: WS-DAN attention on a ResNet built from scratch.

PANDA-GAN's discriminator (Barker & Breckon, Section III-B) follows WS-DAN (Hu & Qi, 2019)
on a ResNet-50 backbone (He et al., 2016):

1. backbone features F (N, C_f, h, w);
2. M attention maps A = ReLU(BN(conv1x1(F))) (N, M, h, w), as in WS-DAN;
3. bilinear attention pooling (BAP): part features P[m] = mean_hw(A_m ⊙ F), a (M, C_f)
   feature matrix, computed as one batched matrix product;
4. a discriminative filter bank of K 1x1 convolutions (Wang et al., DFL-CNN) applied to each
   of the M part vectors, global max pooling over the parts (the "1x1 patch of highest
   discrimination"), and DFL-CNN's cross-channel average over the K filters, giving one
   logit; the sigmoid of Eq. 2 is applied by the loss (BCE with logits) and by the score.

Choices the paper leaves open:

* BAP's feature matrix is L2-normalised as in WS-DAN's code, then multiplied by sqrt(M·C_f)
  so its entries have unit RMS (same direction, a constant scale) and logits stay in a range
  the paper's small learning rates (1e-5) can move. WS-DAN's signed square root is left out:
  both factors are non-negative (ReLU outputs) and the root's gradient diverges at zero.
* Width and depth are knobs: ``width`` 64, ``blocks`` (3, 4, 6, 3) with bottlenecks is
  ResNet-50 (23.5 M backbone parameters, v1.5: the stride sits on the 3x3 conv); the tiny
  preset uses a couple of basic blocks a few channels wide.
* The ImageNet stem (7x7/2 conv + 3x3/2 max-pool) is used for inputs of 128 px and more;
  smaller inputs (MNIST/CIFAR at 32 px) get He et al.'s CIFAR stem (one 3x3/1 conv), so a
  32 px image still leaves a 4x4 map for the attention maps after four stages.
* WS-DAN's attention-guided augmentation (crop and drop, Section III-B: "attention guided
  data augmentation ... of non-anomalous samples during training") is provided by
  :func:`attention_crop` and :func:`attention_drop`; WS-DAN's centre loss (a per-class
  feature centre for classification) is not used by a real/fake critic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_STEM_MIN_SIZE = 128


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.downsample = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.downsample(x))


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class ResNetBackbone(nn.Module):
    """ResNet without its classifier: image -> last stage's feature map (N, C_f, h, w).

    Stage i has ``width * 2**i`` bottleneck (or basic) channels; every stage after the first
    halves the resolution.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        width: int = 64,
        blocks: Sequence[int] = (3, 4, 6, 3),
        bottleneck: bool = True,
    ) -> None:
        super().__init__()
        block = Bottleneck if bottleneck else BasicBlock
        if image_size >= IMAGENET_STEM_MIN_SIZE:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
        stages: list[nn.Module] = []
        c_in = width
        for i, count in enumerate(blocks):
            stage_width = width * 2**i
            layers = []
            for j in range(count):
                layers.append(block(c_in, stage_width, 2 if (i > 0 and j == 0) else 1))
                c_in = stage_width * block.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.out_channels = c_in
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


def bilinear_attention_pool(
    features: torch.Tensor, attention: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """BAP: (N, C_f, h, w) x (N, M, h, w) -> part-feature matrix (N, M, C_f).

    WS-DAN's part features are means over h·w of A_m ⊙ F; the L2 normalisation that follows
    removes that 1/(h·w) factor, so the plain matrix product is normalised directly and
    multiplied by ``scale`` (sqrt(M·C_f) in the critic: unit RMS entries)."""
    matrix = torch.matmul(attention.flatten(2), features.flatten(2).transpose(1, 2))
    return F.normalize(matrix.flatten(1), dim=1, eps=1e-12).view_as(matrix) * scale


class FGVCDiscriminator(nn.Module):
    """x -> real/fake logit (N,): backbone, attention, BAP, 1x1 filter bank, GMP, average."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        width: int = 64,
        blocks: Sequence[int] = (3, 4, 6, 3),
        bottleneck: bool = True,
        attention_maps: int = 32,
        filter_bank: int = 10,
    ) -> None:
        super().__init__()
        self.backbone = ResNetBackbone(in_channels, image_size, width, tuple(blocks), bottleneck)
        c_f = self.backbone.out_channels
        self.attention = nn.Sequential(
            nn.Conv2d(c_f, attention_maps, 1, bias=False),
            nn.BatchNorm2d(attention_maps),
            nn.ReLU(inplace=True),
        )
        self.filter_bank = nn.Conv2d(c_f, filter_bank, 1)
        self.bap_scale = float(attention_maps * c_f) ** 0.5

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(BAP feature matrix (N, M, C_f), attention maps (N, M, h, w))."""
        features = self.backbone(x)
        attention = self.attention(features)
        return bilinear_attention_pool(features, attention, self.bap_scale), attention

    def logit_from_parts(self, matrix: torch.Tensor) -> torch.Tensor:
        """Filter bank on each part vector, max over parts (GMP), mean over filters."""
        as_map = matrix.transpose(1, 2).unsqueeze(-1)  # (N, C_f, M, 1): M part "positions"
        responses = self.filter_bank(as_map)  # (N, K, M, 1)
        return responses.amax(dim=(2, 3)).mean(dim=1)

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        matrix, attention = self.parts(x)
        return self.logit_from_parts(matrix), attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_attention(x)[0]


def _pick_attention(
    attention: torch.Tensor, size: tuple[int, int], generator: torch.Generator | None
) -> torch.Tensor:
    """One map per image, drawn with probability proportional to its mean (WS-DAN),
    upsampled to ``size`` and scaled to a peak of 1: (N, 1, H, W)."""
    n = attention.shape[0]
    weights = attention.mean(dim=(2, 3)) + 1e-12
    index = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    chosen = attention[torch.arange(n, device=attention.device), index].unsqueeze(1)
    maps = F.interpolate(chosen, size=size, mode="bilinear", align_corners=False)
    return maps / maps.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def attention_crop(
    images: torch.Tensor,
    attention: torch.Tensor,
    threshold: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WS-DAN attention cropping: the box around one attention map's region above
    ``threshold`` (relative to its peak), cut out and resized back to the input size."""
    n, _, h, w = images.shape
    maps = _pick_attention(attention, (h, w), generator)[:, 0]
    # the peak is always inside (an all-zero map selects the whole image)
    mask = (maps >= threshold) | (maps >= maps.amax(dim=(1, 2), keepdim=True))
    rows, cols = mask.any(dim=2), mask.any(dim=1)
    ys = torch.linspace(-1.0, 1.0, h, device=images.device)
    xs = torch.linspace(-1.0, 1.0, w, device=images.device)
    big = torch.tensor(2.0, device=images.device)
    y0 = torch.where(rows, ys, big).amin(1)
    y1 = torch.where(rows, ys, -big).amax(1)
    x0 = torch.where(cols, xs, big).amin(1)
    x1 = torch.where(cols, xs, -big).amax(1)
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, 0, 0] = (x1 - x0) / 2
    theta[:, 0, 2] = (x1 + x0) / 2
    theta[:, 1, 1] = (y1 - y0) / 2
    theta[:, 1, 2] = (y1 + y0) / 2
    grid = F.affine_grid(theta, list(images.shape), align_corners=True)
    return F.grid_sample(images, grid, mode="bilinear", align_corners=True)


@torch.no_grad()
def attention_drop(
    images: torch.Tensor,
    attention: torch.Tensor,
    threshold: float = 0.5,
    fill: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WS-DAN attention dropping: pixels where one attention map exceeds ``threshold`` of
    its peak are set to ``fill`` (0: mid-grey in [-1, 1] inputs)."""
    h, w = images.shape[-2:]
    maps = _pick_attention(attention, (h, w), generator)
    return torch.where(maps >= threshold, torch.full_like(images, fill), images)
