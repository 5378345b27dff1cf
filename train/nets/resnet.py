"""ResNet-18 family encoder (He et al. 2016), its mirror decoder, and backbone loading.

``ResNetEncoder`` is torchvision's ResNet-18 layout (BasicBlock, [2, 2, 2, 2] blocks,
widths 64-128-256-512) with two knobs: ``width`` scales every stage (tiny presets use 1/8),
and ``stem`` picks torchvision's ImageNet stem (7x7 stride-2 conv + 3x3 stride-2 max-pool,
total reduction 32) or the CIFAR stem (3x3 stride-1 conv, no pool, reduction 8) that small
inputs such as 32 px patches need to keep a spatial map. After global average pooling a
linear ``project`` maps to the latent code. The trunk's parameter names are torchvision's
(``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``layer4.1.bn2``, ``downsample.0/1``), so a
torchvision-style ResNet-18 state dict loads by name (:func:`load_backbone`); ``project``
is ours (torchvision's ``fc`` is a 1000-way classifier and is ignored).

``ResNetDecoder`` mirrors it: a linear layer to the last stage's map, then per stage (deep
to shallow) ``blocks - 1`` residual blocks and one upsampling residual block (nearest x2 +
3x3 conv, 1x1 conv shortcut) that halves the width; the ImageNet stem is undone by one
more upsampling block (the max-pool) and an upsample + 3x3 conv to the image (the stride-2
conv1). Output ``tanh``: inputs are normalised to [-1, 1]. Nearest upsampling followed by a
convolution exports to ONNX Resize + Conv, which TensorRT handles well (docs/architecture.md,
Precision).

``norm="layer"`` swaps BatchNorm for GroupNorm(1, C) (LayerNorm over C, H, W): critics
that regress per-sample targets should not share batch statistics across samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

RESNET18_BLOCKS = (2, 2, 2, 2)
RESNET_WIDTHS = (64, 128, 256, 512)
STEMS = ("imagenet", "cifar")


def stage_widths(width: float) -> tuple[int, ...]:
    """Channel widths of the four stages, scaled by ``width`` (at least one channel)."""
    if width <= 0:
        raise ValueError(f"width multiplier must be positive, got {width}")
    return tuple(max(1, round(w * width)) for w in RESNET_WIDTHS)


def stem_reduction(stem: str) -> int:
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got '{stem}'")
    return 4 if stem == "imagenet" else 1


def total_reduction(stem: str, blocks: Sequence[int] = RESNET18_BLOCKS) -> int:
    """Input side / last map side: the stem's reduction times 2 per stage after the first."""
    return stem_reduction(stem) * 2 ** (len(blocks) - 1)


def auto_stem(image_size: int) -> str:
    """ImageNet stem from 64 px up (a 2x2 map or larger at the end), CIFAR stem below."""
    return "imagenet" if image_size >= 64 else "cifar"


def check_input_size(image_size: int, stem: str, blocks: Sequence[int] = RESNET18_BLOCKS) -> None:
    reduction = total_reduction(stem, blocks)
    if image_size < reduction or image_size % reduction:
        raise ValueError(
            f"a ResNet with the {stem} stem needs an input side that is a multiple of "
            f"{reduction}, got {image_size}"
        )


def norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    raise ValueError(f"norm must be 'batch' or 'layer', got '{kind}'")


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (same attribute names, so state dicts load)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, norm: str = "batch") -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = norm2d(norm, c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = norm2d(norm, c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm2d(norm, c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetEncoder(nn.Module):
    """x (N, C, S, S) -> code (N, latent_dim): ResNet trunk, global average pool, linear."""

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        width: float = 1.0,
        stem: str = "imagenet",
        norm: str = "batch",
        blocks: Sequence[int] = RESNET18_BLOCKS,
    ) -> None:
        super().__init__()
        widths = stage_widths(width)
        self.stem = stem
        self.widths = widths
        if stem_reduction(stem) == 4:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = conv3x3(in_channels, widths[0])
            self.maxpool = nn.Identity()
        self.bn1 = norm2d(norm, widths[0])
        self.relu = nn.ReLU(inplace=True)
        c_in = widths[0]
        for i, (c_out, count) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            layer = [BasicBlock(c_in, c_out, stride, norm)]
            layer += [BasicBlock(c_out, c_out, 1, norm) for _ in range(count - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            c_in = c_out
        self.project = nn.Linear(widths[-1], latent_dim)
        init_resnet_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.project(pooled)


class UpBlock(nn.Module):
    """The decoder's mirror of BasicBlock: optional nearest x2 upsampling, two 3x3 convs,
    and a 1x1 conv shortcut where the side or the width changes."""

    def __init__(self, c_in: int, c_out: int, upsample: bool) -> None:
        super().__init__()
        self.upsample: nn.Module = nn.Upsample(scale_factor=2) if upsample else nn.Identity()
        self.conv1 = conv3x3(c_in, c_out)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module | None = None
        if upsample or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.upsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + identity)


class ResNetDecoder(nn.Module):
    """code (N, latent_dim) -> image (N, C, S, S) in [-1, 1], mirroring ResNetEncoder."""

    def __init__(
        self,
        out_channels: int,
        latent_dim: int,
        image_size: int,
        width: float = 1.0,
        stem: str = "imagenet",
        blocks: Sequence[int] = RESNET18_BLOCKS,
    ) -> None:
        super().__init__()
        check_input_size(image_size, stem, blocks)
        widths = stage_widths(width)
        self.start = image_size // total_reduction(stem, blocks)
        self.widths = widths
        self.project = nn.Linear(latent_dim, widths[-1] * self.start**2)
        self.bn0 = nn.BatchNorm2d(widths[-1])
        stages: list[nn.Module] = []
        for i in reversed(range(len(widths))):
            c_out = widths[max(i - 1, 0)]
            stage = [UpBlock(widths[i], widths[i], False) for _ in range(blocks[i] - 1)]
            stage.append(UpBlock(widths[i], c_out, upsample=i > 0))
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        if stem_reduction(stem) == 4:  # undo the max-pool, then the stride-2 conv1
            self.unstem: nn.Module = nn.Sequential(
                UpBlock(widths[0], widths[0], True), nn.Upsample(scale_factor=2)
            )
        else:
            self.unstem = nn.Identity()
        self.out = nn.Conv2d(widths[0], out_channels, 3, 1, 1)
        init_resnet_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(-1, self.widths[-1], self.start, self.start)
        x = torch.relu(self.bn0(x))
        return torch.tanh(self.out(self.unstem(self.stages(x))))


def init_resnet_weights(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan-out) convolutions, unit
    norm scales and zero shifts."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@contextmanager
def frozen_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Use batch statistics but leave the running statistics untouched (momentum 0).

    For forward passes on inputs the module never sees at inference (IGD's interpolated
    codes), so its running statistics describe only real data."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


def _read_state_dict(path: str | Path) -> Mapping[str, torch.Tensor]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"backbone weights '{file}' do not exist")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"'{file}' does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if torch.is_tensor(v)}


def _grey_fits(rgb: torch.Tensor, grey: torch.Tensor) -> bool:
    """A 3-channel first conv that becomes the 1-channel one by summing its colours."""
    return (
        rgb.shape[1] == 3
        and grey.shape[1] == 1
        and rgb.shape[0] == grey.shape[0]
        and rgb.shape[2:] == grey.shape[2:]
    )


def load_backbone(encoder: ResNetEncoder, path: str | Path) -> dict[str, list[str]]:
    """Copy the tensors of a torchvision-style ResNet-18 state dict into ``encoder``.

    A tensor loads when its name and shape match the encoder's (the projection head and
    torchvision's ``fc`` never match; a 7x7 ImageNet ``conv1`` does not fit a CIFAR stem).
    A 3-channel ``conv1`` fits a 1-channel encoder by summing over the colour channels
    (grey = R + G + B response). Returns the loaded and skipped names; raises ValueError
    when nothing matches (not a ResNet-18 state dict, or another width)."""
    source = _read_state_dict(path)
    own = encoder.state_dict()
    loaded, skipped = [], []
    for name, tensor in source.items():
        target = own.get(name)
        if target is not None and name == "conv1.weight" and _grey_fits(tensor, target):
            tensor = tensor.sum(dim=1, keepdim=True)
        if target is None or tensor.shape != target.shape:
            skipped.append(name)
            continue
        own[name] = tensor.to(target.dtype)
        loaded.append(name)
    if not [n for n in loaded if not n.endswith("num_batches_tracked")]:
        raise ValueError(
            f"no tensor of '{path}' fits this ResNet encoder (names or shapes differ): "
            "expected a torchvision-style ResNet-18 state dict of the same width"
        )
    encoder.load_state_dict(own)
    return {"loaded": loaded, "skipped": skipped}
