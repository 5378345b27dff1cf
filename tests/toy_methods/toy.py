"""Toy: a one-layer auto-encoder scored by its reconstruction error.

Everything adedge needs to train, export and list this method is in this file: the config
(extending CommonConfig), the networks, one training step, the validation criterion, the
inference module, and the registration. tests/train/test_method_registry.py proves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adedge.registry import PaperTime
from adedge.train.methods.base import CommonConfig, Method, register_method


@dataclass
class ToyConfig(CommonConfig):
    image_size: int = 16
    channels: int = 1
    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    width: int = 4
    init_weights: str | None = None  # a state dict of ToyNet to start from


class ToyNet(nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(config.channels, config.width, 3, 2, 1), nn.ReLU())
        self.decoder = nn.ConvTranspose2d(config.width, config.channels, 4, 2, 1)
        if config.init_weights:
            self.load_state_dict(torch.load(config.init_weights, weights_only=True))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


class ToyScorer(nn.Module):
    """score = mean |x - AE(x)| per image."""

    def __init__(self, net: ToyNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.net(images)).abs().mean(dim=(1, 2, 3))


@register_method(
    name="toy",
    title="Toy: a one-layer auto-encoder (the registry's test method)",
    paper="tests/toy_methods/toy.py",
    pretrained_field="init_weights",
    pretrained_weights="a ToyNet state dict",
    headline_losses=("L_rec",),
    paper_timings=(
        PaperTime(1.5, "a toy GPU", "Toy, 16x16", image_size=16, label="16x16"),
        PaperTime(9.0, "a toy GPU", "another method the toy paper quotes", image_size=16),
    ),
)
class ToyMethod(Method[ToyConfig]):
    config_type = ToyConfig
    presets: dict[str, dict[str, Any]] = {"paper": {}, "tiny": {"width": 2}}

    def build(self, config: ToyConfig, num_classes: int) -> ToyNet:
        return ToyNet(config)

    def make_optimizers(self, model: ToyNet, config: ToyConfig) -> dict[str, torch.optim.Optimizer]:
        return {"ae": torch.optim.Adam(model.parameters(), config.lr)}

    def train_step(
        self,
        model: ToyNet,
        optimizers: dict[str, torch.optim.Optimizer],
        images: torch.Tensor,
        labels: torch.Tensor,
        progress: float,
        config: ToyConfig,
    ) -> dict[str, float]:
        loss = (images - model(images)).abs().mean()
        optimizers["ae"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["ae"].step()
        return {"L_rec": float(loss.detach())}

    @torch.no_grad()
    def validation_loss(self, model: ToyNet, images: torch.Tensor, labels: torch.Tensor) -> float:
        return float((images - model(images)).abs().mean())

    def inference_module(self, model: ToyNet) -> ToyScorer:
        return ToyScorer(model)
