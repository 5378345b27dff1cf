"""The epoch loop: steps, progress lines, validation, ``last.pt``/``best.pt``, history.

:class:`EpochLoop` holds every piece of a run's bookkeeping in one object so that resume can
restore all of it from ``last.pt``; the :class:`~adedge.train.trainer.Trainer` builds it and
runs it. Validation scores tiles and reduces them per image as the runtime does.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from adedge import __version__
from adedge.atomic import write_text
from adedge.data import DataSet
from adedge.metrics import auroc
from adedge.paths import BEST, LAST
from adedge.train import distributed
from adedge.train.checkpoint import Checkpoint, invalid, load_weights, problem
from adedge.train.methods.base import CommonConfig, score_of
from adedge.train.prepare import Prepared
from adedge.train.selection import PSEUDO_LIMIT, pseudo_anomalies, selection_value
from adedge.train.views import chunks, iterate_inputs, random_views

if TYPE_CHECKING:
    from adedge.train.trainer import Trainer


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
    parts = [score_of(scorer(part.to(device))).float().cpu() for part in chunks(images, chunk)]
    return torch.cat(parts).numpy()


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class EpochLoop:
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
        self.best_val = math.inf  # the selection rule's value of best.pt (lower is better)
        self.epoch_seconds = 0.0
        self.selection = trainer.method.selection_rule(config)
        self._pseudo: torch.Tensor | None = None

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
        chose = self.history[-1].get("selection", "val_loss") if self.history else None
        if chose is not None and chose != self.selection:
            self.best_val = math.inf  # a run from before this rule: its value is another's

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
                batch = distributed.shard(  # this process's part of the global batch
                    order[
                        self.step_in_epoch * self.config.batch_size : (self.step_in_epoch + 1)
                        * self.config.batch_size
                    ],
                    self.trainer.world,
                )
                progress = (self.epoch * self.steps_per_epoch + self.step_in_epoch) / total_steps
                losses = self.trainer.method.train_step(
                    self.model,
                    self.optimizers,
                    self.inputs(batch),
                    self.data.train_y[batch].to(self.trainer.device),
                    progress,
                    self.config,
                )
                self.accumulate(
                    distributed.average_losses(losses, self.trainer.world, self.trainer.device)
                )
                self.step_in_epoch += 1
                now = time.monotonic()
                self.epoch_seconds = now - started
                if now - last_log > self.trainer.options.log_seconds:
                    self.log_progress(total_steps)
                    last_log = now
                if (
                    now - last_save > 60 * self.trainer.options.checkpoint_minutes
                    and self.trainer.world.main
                ):
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
        if not self.trainer.world.main:  # rank 0 alone validates and writes
            distributed.broadcast_state(self.model)
            self.epoch += 1
            self.step_in_epoch = 0
            self.sums, self.count, self.epoch_seconds = {}, 0, 0.0
            return
        if self.trainer.world.active:
            distributed.broadcast_state(self.model)
        scorer = self.trainer.method.inference_module(self.model)
        self.model.eval()
        val_loss = self.trainer.method.validation_loss(
            self.model,
            self.data.val_x.to(self.trainer.device),
            self.data.val_y.to(self.trainer.device),
        )
        val_scores = score_tensor(scorer, self.data.val_x, self.trainer.device)
        pseudo_auroc = self.pseudo_auroc(scorer, val_scores)
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "seconds": round(self.epoch_seconds, 2),
            **{k: v / max(self.count, 1) for k, v in self.sums.items()},
            "val_loss": val_loss,
            "val_score_mean": float(val_scores.mean()),
            "val_pseudo_auroc": pseudo_auroc,
            **self.trainer.method.validation_metrics(
                self.model,
                self.data.val_x.to(self.trainer.device),
                self.data.val_y.to(self.trainer.device),
            ),
        }
        if self.trainer.options.monitor_test and self.data.test_x is not None:
            tile_scores = score_tensor(scorer, self.data.test_x, self.trainer.device)
            test_scores = reduce_tiles(tile_scores, self.data.tiles, self.data.plan.reduce)
            if 0 < self.data.test_y.sum() < len(self.data.test_y):
                record["test_auroc_monitor"] = auroc(self.data.test_y, test_scores)
        value = selection_value(self.selection, self.epoch + 1, val_loss, pseudo_auroc)
        improved = value < self.best_val
        self.best_val = min(self.best_val, value)
        best_before = self.history[-1].get("best_epoch") if self.history else None
        record["selection"] = self.selection  # the rule that picks best.pt
        record["best_epoch"] = self.epoch + 1 if improved else best_before
        self.history.append(record)
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
            f"{headline}  val_loss {val_loss:.4f}  pseudo AUROC {pseudo_auroc:.4f}"
            + (f"  (best by {self.selection})" if improved else "")
            + (f"  test AUROC {monitor:.4f} (monitor only)" if monitor is not None else "")
            + f"  ~{format_duration(left)} left"
        )

    def pseudo_auroc(self, scorer: torch.nn.Module, val_scores: np.ndarray) -> float:
        """AUROC of the first held-out normal inputs (their scores ``val_scores[:n]``) against
        the same inputs with a synthetic defect each (:mod:`adedge.train.selection`); NaN
        when it cannot be computed (e.g. scores that are not finite)."""
        count = min(len(self.data.val_x), PSEUDO_LIMIT)
        if count == 0:
            return math.nan
        if self._pseudo is None:
            self._pseudo = pseudo_anomalies(self.data.val_x[:count], self.data.spec)
        pseudo = score_tensor(scorer, self._pseudo, self.trainer.device)
        scores = np.concatenate([val_scores[:count], pseudo])
        if not np.isfinite(scores).all():
            return math.nan
        return auroc(np.r_[np.zeros(count), np.ones(count)], scores)

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
