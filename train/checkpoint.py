"""Checkpoints: weights plus everything needed to rebuild, resume and export the model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from adedge.atomic import atomic_path
from adedge.errors import CheckpointError

CHECKPOINT_FORMAT = 1
LAST = "last.pt"
BEST = "best.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary name and rename: a crash never leaves a broken checkpoint."""
    with atomic_path(path) as tmp:
        torch.save({"adedge_checkpoint": CHECKPOINT_FORMAT, **payload}, tmp)


def load_checkpoint(path: str | os.PathLike[str], method: str | None = None) -> dict[str, Any]:
    """Read a checkpoint; a CheckpointError names a missing, foreign or other-method file."""
    file = Path(path)
    if file.is_dir():
        file = file / BEST if (file / BEST).is_file() else file / LAST
    if not file.is_file():
        raise CheckpointError(
            f"checkpoint '{path}' does not exist",
            "pass a .pt file written by `adedge train` (or its run folder) with --checkpoint",
        )
    try:
        payload = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"checkpoint '{file}' cannot be read ({type(exc).__name__})",
            "it is damaged or not a torch file: use another checkpoint or train again",
        ) from None
    if not isinstance(payload, dict) or "adedge_checkpoint" not in payload:
        raise CheckpointError(
            f"'{file}' is not an adedge checkpoint", "pass a checkpoint written by `adedge train`"
        )
    if method is not None and payload.get("method") != method:
        raise CheckpointError(
            f"checkpoint '{file}' is a {payload.get('method')} model, not {method}",
            f"use --method {payload.get('method')} or a {method} checkpoint",
        )
    payload["path"] = str(file)
    return payload
