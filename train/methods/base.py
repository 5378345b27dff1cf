"""What a method file provides to the generic trainer and exporter.

A method owns its networks, losses, one training step, its validation criterion (computed
on held-out *normal* images only) and the inference module that export traces: a plain
``nn.Module`` mapping a normalised image batch to ``score`` (N,) (and ``amap`` where the
method localises).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, fields
from typing import Any

import torch
from torch import nn


class Method(ABC):
    name: str
    config_type: type
    presets: dict[str, dict[str, Any]]

    def make_config(self, preset: str = "paper", **overrides: Any) -> Any:
        if preset not in self.presets:
            raise KeyError(preset)
        values = {**self.presets[preset], **{k: v for k, v in overrides.items() if v is not None}}
        return self.config_type(**values)

    def config_from_dict(self, data: dict[str, Any]) -> Any:
        known = {f.name for f in fields(self.config_type)}
        return self.config_type(**{k: v for k, v in data.items() if k in known})

    @staticmethod
    def config_to_dict(config: Any) -> dict[str, Any]:
        return asdict(config)

    @abstractmethod
    def build(self, config: Any, num_classes: int) -> nn.Module:
        """The full training model (every network the paper trains)."""

    @abstractmethod
    def make_optimizers(
        self, model: nn.Module, config: Any
    ) -> dict[str, torch.optim.Optimizer]: ...

    @abstractmethod
    def train_step(
        self,
        model: nn.Module,
        optimizers: dict[str, torch.optim.Optimizer],
        images: torch.Tensor,
        labels: torch.Tensor,
        progress: float,
        config: Any,
    ) -> dict[str, float]:
        """One optimisation step; ``progress`` runs from 0 to 1 over the whole training."""

    @abstractmethod
    def validation_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> float:
        """Checkpoint-selection criterion on held-out normal images (lower is better)."""

    @abstractmethod
    def inference_module(self, model: nn.Module) -> nn.Module:
        """The pruned scorer that export traces: images -> score (N,)."""
