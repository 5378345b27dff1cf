"""What a training run is asked for and what it gives back.

:class:`TrainOptions` holds the command line's settings and refuses, before anything is
loaded, those no method can train with; :func:`parse_overrides` types ``--set KEY=VALUE``
strings against a method's config; :class:`TrainResult` names the run folder's checkpoints.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from adedge.errors import AdedgeError
from adedge.paths import BEST, LAST

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
    nproc: int = 1  # training processes (--nproc; torchrun sets its own)

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
            ("--nproc", self.nproc),
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
    main: bool = True  # False on the other ranks of a torchrun job

    @property
    def best(self) -> Path:
        return self.run_dir / BEST

    @property
    def last(self) -> Path:
        return self.run_dir / LAST


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
