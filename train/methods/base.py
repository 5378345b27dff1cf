"""What a method file provides to the generic trainer and exporter.

A method owns its networks, losses, one training step, its validation criterion (computed
on held-out *normal* images only) and the inference module that export traces: a plain
``nn.Module`` mapping a normalised image batch to ``score`` (N,) (and ``amap`` where the
method localises). Its config extends :class:`CommonConfig`, and its Method class carries
``@register_method(...)``: adding that one file is all a new method takes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import nn

from adedge.registry import MethodInfo


@dataclass
class CommonConfig:
    """The fields every method's config has: what the trainer and the command line set
    (``--image-size``, ``--epochs``, ``--batch-size``, ``--lr``, and the data's channels).

    A method's config redeclares each of them with its paper's default (a config that leaves
    one out fails when its class is defined)."""

    image_size: int
    channels: int
    epochs: int
    batch_size: int
    lr: float


ConfigT = TypeVar("ConfigT", bound=CommonConfig)


@dataclass(frozen=True)
class TrainView:
    """How the trainer cuts one training input from a prepared (resized) image.

    ``crop``: side of a random crop (texture patches); None keeps the whole image.
    ``rotation_degrees``: a random rotation in [-r, r] about the crop centre, reflected at
    the image border (CBiGAN's rotation augmentation); ``hflip``: random horizontal flips.
    """

    crop: int | None = None
    rotation_degrees: float = 0.0
    hflip: bool = False


@dataclass(frozen=True)
class StagePlan:
    """How one trained checkpoint becomes one stage of a bundle (docs/architecture.md, Bundle).

    ``frame_size``: the whole image is resized to this square first (the card's input size,
    or its tiling ``resize_to``). ``tile``/``stride``: None for a whole-image stage; else the
    runtime cuts ``tile``-sized tiles every ``stride`` pixels and reduces their scores by
    ``reduce`` (IGD's local max-pooling, CBiGAN's max over texture tiles). The network's
    input side is ``tile`` for a tiled stage and ``frame_size`` otherwise. ``weight``: the
    stage's weight in the bundle's sum of stage scores (IGD Eq. 13).
    """

    frame_size: int
    name: str = "global"
    tile: int | None = None
    stride: int | None = None
    padding: str = "reflect"
    reduce: str = "max"
    weight: float = 1.0
    view: TrainView = field(default_factory=TrainView)

    @property
    def tiled(self) -> bool:
        return self.tile is not None

    @property
    def input_size(self) -> int:
        return self.tile if self.tile is not None else self.frame_size


class Method(ABC, Generic[ConfigT]):
    """One paper's method. ``info`` and ``name`` come from its ``@register_method``."""

    info: ClassVar[MethodInfo]
    name: ClassVar[str]
    config_type: type[ConfigT]
    presets: dict[str, dict[str, Any]]

    def make_config(self, preset: str = "paper", **overrides: Any) -> ConfigT:
        """The preset with ``overrides`` (None: the preset's value). A field the config does
        not have is a TypeError, never dropped."""
        if preset not in self.presets:
            raise KeyError(preset)
        unknown = sorted(set(overrides) - {f.name for f in fields(self.config_type)})
        if unknown:
            raise TypeError(f"the {self.name} config has no field {', '.join(unknown)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return self.config_type(**{**self.presets[preset], **given})

    def config_from_dict(self, data: dict[str, Any]) -> ConfigT:
        """A saved config; fields this version no longer has are left out, so the
        checkpoints of earlier runs still load."""
        known = {f.name for f in fields(self.config_type)}
        return self.config_type(**{k: v for k, v in data.items() if k in known})

    @staticmethod
    def config_to_dict(config: CommonConfig) -> dict[str, Any]:
        return asdict(config)

    def stage_plan(self, config: ConfigT) -> StagePlan:
        """Whole images at ``config.image_size``, one 'global' stage: override to tile."""
        return StagePlan(frame_size=config.image_size)

    def mode_for_data(self, kind: str) -> str | None:
        """The config ``mode`` a data set of ``kind`` ('objects' or 'textures') implies when
        the user gives no ``--mode``; None leaves the preset's mode."""
        return None

    def epoch_start(
        self,
        model: nn.Module,
        config: ConfigT,
        epoch: int,
        training_inputs: Callable[[int], Iterator[torch.Tensor]],
    ) -> None:
        """Called before each epoch's first step (not when resuming mid-epoch).

        ``training_inputs(batch_size)`` iterates every normal training input once, in a fixed
        order, at the stage's input size (tiled stages: every grid tile of every image), on
        the training device: what IGD's E-step (mu, sigma) or DDR-ID's centre Z_C averages
        over. State set here must live in the model's buffers so checkpoints carry it.
        """
        return None

    def epoch_end(
        self,
        model: nn.Module,
        config: ConfigT,
        epoch: int,
        training_inputs: Callable[[int], Iterator[torch.Tensor]],
    ) -> None:
        """Called after an epoch's last step, before validation and the checkpoint: state
        estimated here (IGD's E-step) belongs to the weights that are scored and saved."""
        return None

    def prepare_export(
        self, model: nn.Module, config: ConfigT, calibration: torch.Tensor
    ) -> dict[str, Any]:
        """Called by export before tracing, with held-out normal inputs at the stage's input
        size (tiles for tiled stages). A method may fix constants its score needs here (e.g.
        DDR-ID's choice of AS_l or AS_r, PANDA's min-max constants) by setting buffers or
        attributes; the returned facts go into the card's ``training.export`` section."""
        return {}

    @abstractmethod
    def build(self, config: ConfigT, num_classes: int) -> nn.Module:
        """The full training model (every network the paper trains)."""

    @abstractmethod
    def make_optimizers(
        self, model: nn.Module, config: ConfigT
    ) -> dict[str, torch.optim.Optimizer]: ...

    @abstractmethod
    def train_step(
        self,
        model: nn.Module,
        optimizers: dict[str, torch.optim.Optimizer],
        images: torch.Tensor,
        labels: torch.Tensor,
        progress: float,
        config: ConfigT,
    ) -> dict[str, float]:
        """One optimisation step; ``progress`` runs from 0 to 1 over the whole training."""

    @abstractmethod
    def validation_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> float:
        """A criterion on held-out normal images (lower is better): it picks ``best.pt`` under
        the ``val_loss`` selection rule and is logged under every rule."""

    def selection_rule(self, config: ConfigT) -> str:
        """How the trainer picks ``best.pt`` (:mod:`adedge.train.selection`): the config's
        ``selection`` field where it has one (``last``, ``pseudo`` or ``val_loss``), else
        ``val_loss``, the lowest :meth:`validation_loss`."""
        from adedge.train.selection import check_selection

        return check_selection(getattr(config, "selection", "val_loss"))

    def validation_metrics(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, float]:
        """Extra numbers logged per epoch in ``history.jsonl`` (held-out normal images, eval
        mode); they select nothing. None by default."""
        return {}

    @abstractmethod
    def inference_module(self, model: nn.Module) -> nn.Module:
        """The pruned scorer that export traces: images (N, C, s, s) at the stage plan's
        ``input_size`` -> ``score`` (N,), or ``(score, amap)`` with ``amap`` (N, 1, s, s)
        where the method localises."""

    def full_model_forward(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Score images with the whole trained model, as the authors' test pass runs it
        (every network it evaluates, eval mode): what the papers' per-image timings cover.

        Benchmarks time it beside the pruned ``inference_module`` to show what pruning
        buys. The default is the pruned scorer, for methods whose test pass needs no more.
        """
        return score_of(self.inference_module(model)(images))


REGISTERED: dict[str, Method] = {}  # name -> the method, filled as method files are imported

MethodT = TypeVar("MethodT", bound=type[Method])


def register_method(**declared: Any) -> Callable[[MethodT], MethodT]:
    """Register the decorated Method class under ``declared['name']`` (see
    :class:`adedge.registry.MethodInfo` for the arguments).

    The registry reads these arguments from the file's text before anything imports it, so
    give them as literal values. Registering checks that the class fits them: its config
    extends CommonConfig, its presets name config fields and include 'paper', a ``mode``
    field exists exactly when modes are declared and takes each of them, and the pretrained
    field is a config field.
    """

    def register(cls: MethodT) -> MethodT:
        info = MethodInfo(module=cls.__module__, **declared)
        check_registration(cls, info)
        cls.info, cls.name = info, info.name
        REGISTERED[info.name] = cls()
        return cls

    return register


def check_registration(cls: type[Method], info: MethodInfo) -> None:
    config = cls.config_type
    where = f"@register_method(name='{info.name}') on {cls.__qualname__}"
    if not (isinstance(config, type) and issubclass(config, CommonConfig)):
        raise TypeError(f"{where}: its config_type must extend CommonConfig")
    names = {f.name: f for f in fields(config)}
    for preset, values in cls.presets.items():
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise TypeError(f"{where}: preset '{preset}' sets unknown fields {unknown}")
    if "paper" not in cls.presets:
        raise TypeError(f"{where}: a method needs a 'paper' preset (the CLI's default)")
    if bool(info.modes) != ("mode" in names):
        raise TypeError(f"{where}: declare modes exactly when the config has a 'mode' field")
    if info.modes:
        default = names["mode"].default
        if default is MISSING or default not in info.modes:
            raise TypeError(f"{where}: the config's default mode must be one of its modes")
        for mode in info.modes:
            config(**{**cls.presets["paper"], "mode": mode})  # raises if a mode is refused
    if info.pretrained_field is not None and info.pretrained_field not in names:
        raise TypeError(f"{where}: pretrained_field '{info.pretrained_field}' is no config field")


def score_of(output: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The score from an inference module's output: ``score`` or ``(score, amap)``."""
    return output[0] if isinstance(output, (tuple, list)) else output
