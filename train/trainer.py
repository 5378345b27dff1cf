"""The training loop shared by every method: data, progress, history, checkpoints, resume.

A run folder holds ``last.pt`` (written every epoch and every few minutes inside one, so a
killed job resumes where it stopped), ``best.pt`` (lowest validation loss on held-out
*normal* images: test labels never choose a checkpoint), ``history.jsonl`` and
``losses.csv`` (per-epoch mean losses). The test split's AUROC is logged each epoch as a
monitor only, so drift is visible; it selects nothing.

The method's :class:`StagePlan` says what the network sees: whole images resized to
``frame_size``, or (tiled stages) random crops of them (``TrainView``) in training and the
runtime's grid of tiles in validation, with frame scores reduced over tiles as the runtime
reduces them.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adedge import __version__
from adedge.atomic import write_json, write_text
from adedge.data import DataSet, load
from adedge.errors import AdedgeError, DataError
from adedge.metrics import auroc
from adedge.paths import BEST, LAST, RUN_INFO
from adedge.preprocess import InputSpec, prepare_batch
from adedge.train.checkpoint import (
    Checkpoint,
    DamagedCheckpoint,
    invalid,
    load_checkpoint,
    load_weights,
    problem,
)
from adedge.train.methods import load_method
from adedge.train.methods.base import CommonConfig, Method, StagePlan, score_of
from adedge.train.views import grid_tiles, iterate_inputs, random_views, tiles_per_image
from adedge.train.weak_labels import weak_labels

Log = Callable[[str], None]

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 1024  # every method's nets take powers of two from 16
IMAGE_SIZES = [2**k for k in range(4, 11)]
MAX_SEED = 2**32 - 1  # numpy's (weak labels') seed range


@dataclass
class TrainOptions:
    method: str
    data: str
    out: Path
    preset: str = "paper"
    epochs: int | None = None
    batch_size: int | None = None
    image_size: int | None = None
    lr: float | None = None
    weak_labels: bool = False
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    checkpoint_minutes: float = 5.0
    monitor_test: bool = True
    threads: int | None = None
    log_seconds: float = 15.0
    mode: str | None = None  # a method's mode (e.g. cbigan object|texture, igd global|local)
    overrides: dict[str, str] = field(default_factory=dict)  # --set KEY=VALUE config fields

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Settings no method can train with: one AdedgeError, before anything is loaded.
        (What one method accepts, e.g. IGD's local tile within the image, is the Trainer's
        dry run of its config: ``Trainer.check_settings``.)"""
        size = self.image_size
        if size is not None and (size not in IMAGE_SIZES):
            raise AdedgeError(
                f"--image-size {size} is not a power of two from {MIN_IMAGE_SIZE} to "
                f"{MAX_IMAGE_SIZE}",
                f"use one of {', '.join(map(str, IMAGE_SIZES))}, or leave it out for the "
                "data's own size",
            )
        for flag, value in (
            ("--epochs", self.epochs),
            ("--batch-size", self.batch_size),
            ("--threads", self.threads),
        ):
            if value is not None and value < 1:
                raise AdedgeError(
                    f"{flag} {value} must be at least 1", f"e.g. {flag} 8, or leave it out"
                )
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise AdedgeError(
                f"--lr {self.lr:g} must be a positive number",
                "e.g. --lr 2e-4, or leave it out for the preset's",
            )
        if math.isnan(self.checkpoint_minutes) or self.checkpoint_minutes < 0:
            raise AdedgeError(
                f"--checkpoint-minutes {self.checkpoint_minutes:g} must be 0 or more",
                "e.g. --checkpoint-minutes 5 (0 saves last.pt after every step)",
            )
        if math.isnan(self.log_seconds) or self.log_seconds < 0:
            raise AdedgeError(f"log_seconds {self.log_seconds:g} must be 0 or more")
        if not 0 <= self.seed <= MAX_SEED:
            raise AdedgeError(f"--seed {self.seed} must lie in 0...{MAX_SEED}", "e.g. --seed 0")


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> Path:
        return self.run_dir / BEST

    @property
    def last(self) -> Path:
        return self.run_dir / LAST


@dataclass
class Prepared:
    """Tensors built once from the data set with the bundle's own preprocessing.

    ``train_x`` holds whole images at the plan's frame size (tiled stages crop them per
    step); ``val_x`` and ``test_x`` hold what the network scores (tiles for tiled stages),
    ``tiles`` per image.
    """

    spec: InputSpec
    frame_spec: InputSpec
    plan: StagePlan
    tiles: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor | None
    test_y: np.ndarray | None
    class_names: list[str]
    label_source: dict[str, Any]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AdedgeError(
            "--device cuda was asked for but no CUDA GPU is visible", "use --device cpu"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise AdedgeError(f"--device {name} is not a device", "use auto, cpu or cuda") from None


def subclass_labels(
    method: Method, dataset: DataSet, use_weak: bool, images: np.ndarray, seed: int
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Labels for the method's latent classifier: ground truth, or weak k-means labels."""
    labels = np.concatenate([dataset.train.labels, dataset.val.labels])
    if use_weak:
        clusters = weak_labels(images, seed=seed)
        names = [f"cluster{i}" for i in range(clusters.clusters)]
        return clusters.labels, names, {"source": "weak (k-means)", **clusters.summary()}
    if method.info.needs_subclasses and not dataset.has_subclasses:
        raise DataError(
            f"'{dataset.spec}' has a single normal class ({', '.join(dataset.class_names)}), but "
            f"{method.name} learns sub-classes of the normal data",
            "add --weak-labels to derive them by k-means clustering (the paper's Y-GAN*), "
            "or give one sub-folder per normal sub-class",
        )
    return labels, list(dataset.class_names), {"source": "ground truth sub-classes"}


def prepare(dataset: DataSet, options: TrainOptions, method: Method, plan: StagePlan) -> Prepared:
    channels = 1 if dataset.colour == "gray" else 3
    norm = {"colour": dataset.colour, "mean": (0.5,) * channels, "std": (0.5,) * channels}
    frame_spec = InputSpec(plan.frame_size, plan.frame_size, **norm)
    spec = InputSpec(plan.input_size, plan.input_size, **norm)
    train_x = prepare_batch(dataset.train.images, frame_spec)
    val_x = prepare_batch(dataset.val.images, frame_spec)
    labels, names, source = subclass_labels(
        method, dataset, options.weak_labels, np.concatenate([train_x, val_x]), options.seed
    )
    val_y = torch.from_numpy(labels[len(train_x) :])
    tiles = tiles_per_image(plan.frame_size, plan)
    test = dataset.test
    test_x = None
    if test is not None:
        test_x = grid_tiles(torch.from_numpy(prepare_batch(test.images, frame_spec)), plan)
    return Prepared(
        spec=spec,
        frame_spec=frame_spec,
        plan=plan,
        tiles=tiles,
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(labels[: len(train_x)]),
        val_x=grid_tiles(torch.from_numpy(val_x), plan),
        val_y=val_y.repeat_interleave(tiles),
        test_x=test_x,
        test_y=None if test is None else test.labels,
        class_names=names,
        label_source=source,
    )


def parse_overrides(config_type: type, overrides: dict[str, str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` strings as typed config values; an unknown key is a clear error."""
    types = {f.name: f.type for f in fields(config_type)}
    values: dict[str, Any] = {}
    for key, text in overrides.items():
        if key not in types:
            raise AdedgeError(
                f"--set {key}=...: the config has no field '{key}'",
                f"fields: {', '.join(sorted(types))}",
            )
        values[key] = _typed(key, text, str(types[key]))
    return values


def _typed(key: str, text: str, kind: str) -> Any:
    """``text`` as the config field's declared type (its annotation string): bool, int,
    float, str, or a list/tuple of int or float written comma-separated (``2,2,2,2``)."""
    if text.lower() in ("none", "null") and "None" in kind:
        return None
    sequence = re.match(r"(list|tuple)\[(int|float)\b", kind)
    if sequence:
        items = [_typed(key, item.strip(), sequence[2]) for item in text.split(",")]
        return items if sequence[1] == "list" else tuple(items)
    try:
        if kind.startswith("bool"):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
    except ValueError:
        raise AdedgeError(
            f"--set {key}={text}: not a valid {kind.split(' ')[0]}", "e.g. --set alpha=1e-5"
        ) from None
    return text


def finite_or_null(record: dict[str, Any]) -> dict[str, Any]:
    """Strict JSON has no Infinity/NaN (e.g. a pretraining epoch's val_loss): write null."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()
    }


def reduce_tiles(scores: np.ndarray, tiles: int, how: str) -> np.ndarray:
    """Per-image scores from per-tile scores, as the runtime reduces them."""
    if tiles == 1:
        return scores
    grid = scores.reshape(-1, tiles)
    return grid.max(axis=1) if how == "max" else grid.mean(axis=1)


@torch.no_grad()
def score_tensor(
    scorer: torch.nn.Module, images: torch.Tensor, device: torch.device, chunk: int = 512
) -> np.ndarray:
    scorer.eval()
    parts = [
        score_of(scorer(images[i : i + chunk].to(device))).float().cpu()
        for i in range(0, len(images), chunk)
    ]
    return torch.cat(parts).numpy()


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


SETTING_HINT = "check --mode, --image-size and --set against `adedge train --help`"
RESUME_FLAGS = {"image_size": "--image-size", "batch_size": "--batch-size", "lr": "--lr"}


class Trainer:
    def __init__(self, options: TrainOptions, log: Log = print) -> None:
        options.check()  # again: the fields may have changed since the options were made
        self.options = options
        self.log = log
        self.method: Method = load_method(options.method)
        self.run_dir = Path(options.out)
        self.device = pick_device(options.device)
        self.preset = options.preset
        if options.threads:
            torch.set_num_threads(options.threads)

    def _check_run_dir(self) -> Checkpoint | None:
        last = self.run_dir / LAST
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise AdedgeError(
                f"--out '{self.run_dir}' is a file, not a run folder", "choose another --out"
            )
        if self.options.resume:
            if not last.is_file():
                raise AdedgeError(
                    f"--resume: no {LAST} in '{self.run_dir}'", "start a new run without --resume"
                )
            try:
                state = load_checkpoint(last, self.method.name)
            except DamagedCheckpoint as exc:
                raise DamagedCheckpoint(
                    exc.message,
                    f"if {BEST} in '{self.run_dir}' is sound, copy it over {LAST} to resume from "
                    "the best epoch, or start a new run with another --out",
                ) from None
            if state.data_spec != self.options.data:
                raise AdedgeError(
                    f"--resume: '{self.run_dir}' was trained on '{state.data_spec}', "
                    f"not '{self.options.data}'",
                    "pass the same --data or start a new run with another --out",
                )
            return state
        if last.is_file():
            raise AdedgeError(
                f"run folder '{self.run_dir}' already holds a training run",
                "add --resume to continue it, or choose another --out",
            )
        return None

    def settings(self, image_size: int | None, channels: int, mode: str | None) -> dict[str, Any]:
        """The config fields the user set (None: the preset's), ``--set`` ones last."""
        if self.options.preset not in self.method.presets:
            raise AdedgeError(
                f"unknown preset '{self.options.preset}'",
                f"choose one of: {', '.join(self.method.presets)}",
            )
        if self.options.mode and not self.method.info.modes:
            raise AdedgeError(
                f"{self.method.name} has no modes (--mode {self.options.mode})",
                "leave out --mode for this method",
            )
        values: dict[str, Any] = {
            "image_size": image_size,
            "channels": channels,
            "epochs": self.options.epochs,
            "batch_size": self.options.batch_size,
            "lr": self.options.lr,
        }
        if self.method.info.modes:
            values["mode"] = mode
        return {**values, **parse_overrides(self.method.config_type, self.options.overrides)}

    def dry_build(self, config: CommonConfig, num_classes: int = 2) -> ValueError | None:
        """The method's own checks of ``config``: its stage plan and its networks, built on
        the meta device (no memory, no data). The ValueError they raise, or None. An op meta
        tensors lack is no setting's fault: the real build after loading the data decides."""
        try:
            self.method.stage_plan(config)
            with torch.device("meta"):
                self.method.build(copy.deepcopy(config), num_classes)
        except ValueError as exc:
            return exc
        except AdedgeError:
            raise
        except Exception:
            return None
        return None

    def check_settings(self) -> None:
        """Settings this method cannot train with fail here, before any data is loaded.

        The data decides the image size when --image-size is not given, its channels and the
        default mode, so without --image-size a setting is refused only if no size works."""
        sizes: list[int | None] = [self.options.image_size]
        if self.options.image_size is None:
            sizes += IMAGE_SIZES
        first: ValueError | None = None
        for size in sizes:
            try:
                config = self.method.make_config(
                    self.options.preset, **self.settings(size, 3, self.options.mode)
                )
            except ValueError as exc:
                error = exc
            else:
                error = self.dry_build(config)
            if error is None:
                return
            first = first or error
        raise AdedgeError(
            f"{self.method.name} cannot train with this setting: {first}", SETTING_HINT
        )

    def check_resume(self, state: Checkpoint) -> None:
        """A resumed run keeps its settings: options that disagree with them, or a config it
        cannot build, fail here (before the data is loaded)."""
        saved = state.config
        given = {
            "image_size": self.options.image_size,
            "batch_size": self.options.batch_size,
            "lr": self.options.lr,
            "mode": self.options.mode,
            **parse_overrides(self.method.config_type, self.options.overrides),
        }
        if self.options.mode and "mode" not in saved:
            raise AdedgeError(
                f"{self.method.name} has no modes (--mode {self.options.mode})",
                "leave out --mode for this method",
            )
        for key, value in given.items():
            if value is None or key == "epochs" or key not in saved or saved[key] == value:
                continue
            flag = RESUME_FLAGS.get(key, "--mode" if key == "mode" else f"--set {key}=")
            shown = f"{flag}{value}" if flag.endswith("=") else f"{flag} {value}"
            raise AdedgeError(
                f"--resume: the run in '{self.run_dir}' was trained with {key} {saved[key]}, "
                f"not {shown}",
                f"leave out {flag.rstrip('=')} (a resumed run keeps its settings; only --epochs "
                "may change) or start a new run with another --out",
            )
        weak = str((state.labels or {}).get("source", "")).startswith("weak")
        if weak != self.options.weak_labels:
            raise AdedgeError(
                f"--resume: the run in '{self.run_dir}' was trained "
                f"{'with' if weak else 'without'} --weak-labels",
                f"{'add' if weak else 'leave out'} --weak-labels to continue it",
            )
        error = self.dry_build(self.method.config_from_dict(saved), len(state.class_names))
        if error is not None:
            raise invalid(
                self.run_dir / LAST,
                f"its config is not one {self.method.name} can build ({problem(error)})",
            )

    def make_config(self, dataset: DataSet, resumed: Checkpoint | None) -> CommonConfig:
        """The preset with the user's overrides (a resumed run keeps its own config)."""
        if resumed:
            config = self.method.config_from_dict(resumed.config)
            if self.options.epochs:
                config.epochs = self.options.epochs
            return config
        channels = 1 if dataset.colour == "gray" else 3
        values = self.settings(
            self.options.image_size or dataset.suggested_size,
            channels,
            self.options.mode or self.method.mode_for_data(dataset.kind),
        )
        try:
            config = self.method.make_config(self.options.preset, **values)
            self.method.stage_plan(config)
        except ValueError as exc:
            raise AdedgeError(
                f"{self.method.name} cannot train with this setting: {exc}", SETTING_HINT
            ) from None
        return config

    def build(self, config: CommonConfig, data: Prepared, resumed: Checkpoint | None) -> nn.Module:
        if resumed and data.class_names != resumed.class_names:
            raise AdedgeError(
                f"--resume: the run in '{self.run_dir}' learned the classes "
                f"{', '.join(resumed.class_names)}, the data now gives "
                f"{', '.join(data.class_names)}",
                "pass the --data, --seed and --weak-labels the run was started with",
            )
        try:
            return self.method.build(config, len(data.class_names)).to(self.device)
        except ValueError as exc:
            raise AdedgeError(
                f"{self.method.name} cannot train with this setting: {exc}", SETTING_HINT
            ) from None

    @staticmethod
    def describe_plan(plan: StagePlan) -> str:
        if not plan.tiled:
            return f"stage '{plan.name}': whole images at {plan.frame_size}x{plan.frame_size}"
        return (
            f"stage '{plan.name}': images at {plan.frame_size}x{plan.frame_size}, "
            f"{plan.tile}px tiles every {plan.stride or plan.tile}px "
            f"({tiles_per_image(plan.frame_size, plan)} per image, {plan.reduce} over tiles); "
            f"training on random crops ({asdict(plan.view)})"
        )

    def run(self) -> TrainResult:
        resumed = self._check_run_dir()
        if resumed:
            self.check_resume(resumed)
            self.preset = resumed.preset or self.preset
        else:
            self.check_settings()
        torch.manual_seed(self.options.seed)
        dataset = load(self.options.data)
        self.log(f"data: {dataset.spec} ({dataset.protocol}): {json.dumps(dataset.summary())}")
        config = self.make_config(dataset, resumed)
        plan = self.method.stage_plan(config)
        data = prepare(dataset, self.options, self.method, plan)
        self.log(self.describe_plan(plan))
        model = self.build(config, data, resumed)
        optimizers = self.method.make_optimizers(model, config)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            self.run_dir / RUN_INFO,
            {"method": self.method.name, "data": dataset.spec, "preset": self.preset},
        )
        loop = _Loop(self, dataset, data, config, model, optimizers)
        if resumed:
            loop.restore(resumed)
            self.log(
                f"resuming {self.run_dir} at epoch {loop.epoch + 1}, step {loop.step_in_epoch}"
            )
        loop.run()
        return TrainResult(self.run_dir, loop.history)


class _Loop:
    """The epoch loop and its bookkeeping (one object so resume can restore all of it)."""

    def __init__(
        self,
        trainer: Trainer,
        dataset: DataSet,
        data: Prepared,
        config: CommonConfig,
        model: torch.nn.Module,
        optimizers: dict[str, torch.optim.Optimizer],
    ) -> None:
        self.trainer = trainer
        self.dataset = dataset
        self.data = data
        self.config = config
        self.model = model
        self.optimizers = optimizers
        self.epoch = 0
        self.step_in_epoch = 0
        self.sums: dict[str, float] = {}
        self.count = 0
        self.history: list[dict[str, Any]] = []
        self.best_val = math.inf
        self.epoch_seconds = 0.0

    @property
    def samples_per_epoch(self) -> int:
        """Every image once, or for tiled stages as many random crops as it has tiles."""
        return len(self.data.train_x) * self.data.tiles

    @property
    def steps_per_epoch(self) -> int:
        return max(self.samples_per_epoch // self.config.batch_size, 1)

    def restore(self, state: Checkpoint) -> None:
        """The run as last.pt left it; state that does not fit the rebuilt run is one
        CheckpointError (load_checkpoint checked the fields' presence and types)."""
        file = state.path or self.trainer.run_dir / LAST
        load_weights(self.model, state)
        for name, opt in self.optimizers.items():
            if name not in state.optimizers:
                raise invalid(file, f"it lacks the state of optimizer '{name}'")
            try:
                opt.load_state_dict(state.optimizers[name])
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise invalid(
                    file, f"the state of optimizer '{name}' does not fit ({problem(exc)})"
                ) from None
        try:
            torch.set_rng_state(state.rng)
        except RuntimeError as exc:
            raise invalid(file, f"its field 'rng' is no RNG state ({problem(exc)})") from None
        self.epoch = state.epoch
        self.step_in_epoch = state.step_in_epoch
        self.sums = dict(state.loss_sums)
        self.count = state.loss_count
        self.history = list(state.history)
        self.best_val = state.best_val
        self.epoch_seconds = state.epoch_seconds

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            method=self.trainer.method.name,
            config=self.trainer.method.config_to_dict(self.config),
            preset=self.trainer.preset,
            input_spec=self.data.spec,
            frame_spec=self.data.frame_spec,
            stage_plan=self.data.plan,
            class_names=self.data.class_names,
            labels=self.data.label_source,
            data={**self.dataset.summary(), "seed": self.trainer.options.seed},
            model=self.model.state_dict(),
            optimizers={k: v.state_dict() for k, v in self.optimizers.items()},
            epoch=self.epoch,
            step_in_epoch=self.step_in_epoch,
            loss_sums=self.sums,
            loss_count=self.count,
            history=self.history,
            best_val=self.best_val,
            epoch_seconds=self.epoch_seconds,
            rng=torch.get_rng_state(),
            saved=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            adedge_version=__version__,
            torch_version=str(torch.__version__),
        )

    def epoch_order(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.trainer.options.seed * 100_003 + self.epoch)
        order = torch.randperm(self.samples_per_epoch, generator=generator)
        return order % len(self.data.train_x)

    def inputs(self, indices: torch.Tensor) -> torch.Tensor:
        """The step's batch: images, or random views of them (crops, rotation, flips)."""
        images = self.data.train_x[indices].to(self.trainer.device)
        view = self.data.plan.view
        if view.crop is None and view.rotation_degrees == 0 and not view.hflip:
            return images
        return random_views(images, view)

    def training_inputs(self, batch: int):
        return iterate_inputs(self.data.train_x, self.data.plan, batch, self.trainer.device)

    def start_epoch(self) -> None:
        self.trainer.method.epoch_start(self.model, self.config, self.epoch, self.training_inputs)

    def run(self) -> None:
        total_steps = self.config.epochs * self.steps_per_epoch
        last_save = last_log = time.monotonic()
        while self.epoch < self.config.epochs:
            order = self.epoch_order()
            started = time.monotonic() - self.epoch_seconds
            if self.step_in_epoch == 0:
                self.start_epoch()
            self.model.train()
            while self.step_in_epoch < self.steps_per_epoch:
                batch = order[
                    self.step_in_epoch * self.config.batch_size : (self.step_in_epoch + 1)
                    * self.config.batch_size
                ]
                progress = (self.epoch * self.steps_per_epoch + self.step_in_epoch) / total_steps
                losses = self.trainer.method.train_step(
                    self.model,
                    self.optimizers,
                    self.inputs(batch),
                    self.data.train_y[batch].to(self.trainer.device),
                    progress,
                    self.config,
                )
                self.accumulate(losses)
                self.step_in_epoch += 1
                now = time.monotonic()
                self.epoch_seconds = now - started
                if now - last_log > self.trainer.options.log_seconds:
                    self.log_progress(total_steps)
                    last_log = now
                if now - last_save > 60 * self.trainer.options.checkpoint_minutes:
                    self.checkpoint().save(self.trainer.run_dir / LAST)
                    last_save = now
            self.finish_epoch()
            last_save = time.monotonic()

    def accumulate(self, losses: dict[str, float]) -> None:
        for key, value in losses.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def log_progress(self, total_steps: int) -> None:
        done = self.epoch * self.steps_per_epoch + self.step_in_epoch
        rate = self.step_in_epoch / max(self.epoch_seconds, 1e-9)
        left = (total_steps - done) / max(rate, 1e-9)
        means = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        shown = "  ".join(f"{k} {v:.4g}" for k, v in means.items() if k.startswith("L_"))
        self.trainer.log(
            f"epoch {self.epoch + 1}/{self.config.epochs} step {self.step_in_epoch}/"
            f"{self.steps_per_epoch}  {shown}  ~{format_duration(left)} left"
        )

    def finish_epoch(self) -> None:
        self.trainer.method.epoch_end(self.model, self.config, self.epoch, self.training_inputs)
        scorer = self.trainer.method.inference_module(self.model)
        self.model.eval()
        val_loss = self.trainer.method.validation_loss(
            self.model,
            self.data.val_x.to(self.trainer.device),
            self.data.val_y.to(self.trainer.device),
        )
        val_scores = score_tensor(scorer, self.data.val_x, self.trainer.device)
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "seconds": round(self.epoch_seconds, 2),
            **{k: v / max(self.count, 1) for k, v in self.sums.items()},
            "val_loss": val_loss,
            "val_score_mean": float(val_scores.mean()),
        }
        if self.trainer.options.monitor_test and self.data.test_x is not None:
            tile_scores = score_tensor(scorer, self.data.test_x, self.trainer.device)
            test_scores = reduce_tiles(tile_scores, self.data.tiles, self.data.plan.reduce)
            if 0 < self.data.test_y.sum() < len(self.data.test_y):
                record["test_auroc_monitor"] = auroc(self.data.test_y, test_scores)
        self.history.append(record)
        improved = val_loss < self.best_val
        self.best_val = min(self.best_val, val_loss)
        self.epoch += 1
        self.step_in_epoch = 0
        self.sums, self.count, self.epoch_seconds = {}, 0, 0.0
        self.checkpoint().save(self.trainer.run_dir / LAST)
        if improved:
            shutil.copyfile(self.trainer.run_dir / LAST, self.trainer.run_dir / f".{BEST}.partial")
            (self.trainer.run_dir / f".{BEST}.partial").replace(self.trainer.run_dir / BEST)
        self.write_history()
        left = (self.config.epochs - self.epoch) * record["seconds"]
        monitor = record.get("test_auroc_monitor")
        headline = "".join(
            f"  {key} {record[key]:.4g}"
            for key in self.trainer.method.info.headline_losses
            if key in record
        )
        self.trainer.log(
            f"epoch {self.epoch}/{self.config.epochs} done in {format_duration(record['seconds'])}"
            f"{headline}  val_loss {val_loss:.4f}"
            + ("  (best)" if improved else "")
            + (f"  test AUROC {monitor:.4f} (monitor only)" if monitor is not None else "")
            + f"  ~{format_duration(left)} left"
        )

    def write_history(self) -> None:
        write_text(
            self.trainer.run_dir / "history.jsonl",
            "".join(json.dumps(finite_or_null(r)) + "\n" for r in self.history),
        )
        keys = list(dict.fromkeys(k for r in self.history for k in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.history)
        write_text(self.trainer.run_dir / "losses.csv", buffer.getvalue())


def train(options: TrainOptions, log: Log = print) -> TrainResult:
    return Trainer(options, log).run()
