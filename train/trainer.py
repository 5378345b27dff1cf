"""The training loop shared by every method: data, progress, history, checkpoints, resume.

A run folder holds ``last.pt`` (written every epoch and every few minutes inside one, so a
killed job resumes where it stopped), ``best.pt`` (the epoch the method's selection rule
picks, :mod:`adedge.train.selection`: the last epoch, the best pseudo-anomaly AUROC or the
lowest validation loss, all on held-out *normal* images: test labels never choose a
checkpoint; ``run.json`` and every history record name the rule), ``history.jsonl`` and
``losses.csv`` (per-epoch mean losses). The test split's AUROC is logged each epoch as a
monitor only, so drift is visible; it selects nothing.

The method's :class:`StagePlan` says what the network sees: whole images resized to
``frame_size``, or (tiled stages) random crops of them (``TrainView``) in training and the
runtime's grid of tiles in validation, with frame scores reduced over tiles as the runtime
reduces them.

This module holds the :class:`Trainer` (the run folder, its checks, resume);
:mod:`adedge.train.options` the settings, :mod:`adedge.train.prepare` the data and
:mod:`adedge.train.loop` the epoch loop.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adedge.atomic import write_json
from adedge.data import DataSet, load
from adedge.errors import AdedgeError
from adedge.paths import BEST, LAST, RUN_INFO
from adedge.train import distributed
from adedge.train.checkpoint import (
    Checkpoint,
    DamagedCheckpoint,
    invalid,
    load_checkpoint,
    problem,
)
from adedge.train.loop import EpochLoop
from adedge.train.methods import load_method
from adedge.train.methods.base import CommonConfig, Method, StagePlan
from adedge.train.options import IMAGE_SIZES, TrainOptions, TrainResult, parse_overrides
from adedge.train.prepare import Prepared, pick_device, prepare
from adedge.train.views import tiles_per_image

Log = Callable[[str], None]

SETTING_HINT = "check --mode, --image-size and --set against `adedge train --help`"
RESUME_FLAGS = {"image_size": "--image-size", "batch_size": "--batch-size", "lr": "--lr"}


class Trainer:
    def __init__(
        self, options: TrainOptions, log: Log = print, world: distributed.World = distributed.SINGLE
    ) -> None:
        options.check()  # again: the fields may have changed since the options were made
        self.options = options
        self.log = log
        self.world = world  # rank and size of a distributed run (adedge.train.distributed)
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
            self.method.selection_rule(config)
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
        try:
            return self._run()
        finally:
            if self.world.active:
                distributed.shutdown()

    def _run(self) -> TrainResult:
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
        distributed.check_global_batch(config.batch_size, self.world.size)
        plan = self.method.stage_plan(config)
        data = prepare(dataset, self.options, self.method, plan)
        self.log(self.describe_plan(plan))
        model = self.build(config, data, resumed)
        optimizers = self.method.make_optimizers(model, config)
        if self.world.active:
            distributed.init(self.world, self.device)
            model = distributed.prepare_model(model, optimizers, self.world, self.device)
            self.log(
                f"{self.world.size} processes: {config.batch_size // self.world.size} of each "
                f"global batch of {config.batch_size} per process, gradients averaged"
            )
        if self.world.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(
                self.run_dir / RUN_INFO,
                {
                    "method": self.method.name,
                    "data": dataset.spec,
                    "preset": self.preset,
                    "selection": self.method.selection_rule(config),  # picks best.pt
                },
            )
        loop = EpochLoop(self, dataset, data, config, model, optimizers)
        if resumed:
            loop.restore(resumed)
            self.log(
                f"resuming {self.run_dir} at epoch {loop.epoch + 1}, step {loop.step_in_epoch}"
            )
        distributed.spread_rng(self.world)
        loop.run()
        return TrainResult(self.run_dir, loop.history)


def train(options: TrainOptions, log: Log = print) -> TrainResult:
    """One process, ``options.nproc`` spawned local processes, or this process as one rank of
    a torchrun job (its RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)."""
    if distributed.launched_by_torchrun():
        world = distributed.world_from_env()
        if options.nproc not in (1, world.size):
            raise AdedgeError(
                f"--nproc {options.nproc} differs from torchrun's WORLD_SIZE {world.size}",
                "leave out --nproc under torchrun",
            )
        result = Trainer(options, log if world.main else distributed.silent, world).run()
        return TrainResult(result.run_dir, result.history, main=world.main)
    if options.nproc > 1:
        distributed.spawn(options, log)
        return TrainResult(Path(options.out), read_history(Path(options.out)))
    return Trainer(options, log).run()


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch records rank 0 wrote (what a spawned run's parent reports)."""
    path = run_dir / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
