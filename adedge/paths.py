"""Default folders and "the newest one" lookups, so `adedge export` and `adedge stream` work
with nothing else typed. Each run folder holds a small ``run.json`` so finding runs needs no
torch."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from adedge.bundle import CARD_NAME
from adedge.errors import AdedgeError

RUNS_DIR = Path("runs")
MODELS_DIR = Path("models")
RUN_INFO = "run.json"
BEST = "best.pt"  # lowest validation loss on held-out normal images
LAST = "last.pt"  # the latest state: what --resume continues


def new_run_dir(method: str, root: Path = RUNS_DIR) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{method}-{stamp}"


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a run folder stands for: best.pt, else last.pt; None if it has neither."""
    return next((run_dir / name for name in (BEST, LAST) if (run_dir / name).is_file()), None)


def newest_run(method: str, root: Path = RUNS_DIR) -> Path:
    """The most recently written checkpoint of ``method`` under ``root`` (best.pt, else last.pt)."""
    candidates = []
    for info_file in root.glob(f"*/{RUN_INFO}"):
        info = _read_json(info_file)
        if not info or info.get("method") != method:
            continue
        checkpoint = run_checkpoint(info_file.parent)
        if checkpoint is not None:
            candidates.append((checkpoint.stat().st_mtime, checkpoint))
    if not candidates:
        raise AdedgeError(
            f"no {method} training run found under '{root}/'",
            f"train one with `adedge train --method {method} --data ...` or pass --checkpoint",
        )
    return max(candidates)[1]


def resolve_model(model: Path | None, log: Callable[[str], None]) -> Path:
    """``model`` (``--model``), or the newest bundle under models/, saying which."""
    if model is None:
        model = newest_bundle()
        log(f"using the newest bundle: {model} (pick another with --model)")
    return model


def newest_bundle(root: Path = MODELS_DIR) -> Path:
    """The most recently exported bundle under ``root``."""
    cards = [(p.stat().st_mtime, p.parent) for p in root.glob(f"*/{CARD_NAME}")]
    if not cards:
        raise AdedgeError(
            f"no exported model found under '{root}/'",
            "export one with `adedge export --method ygan` or pass --model DIR",
        )
    return max(cards)[1]


VTEST_PLACES = (
    # `make system-deps` extracts it here where opencv-doc cannot be installed
    Path("/tmp/usr/share/doc/opencv-doc/examples/data/vtest.avi"),
    Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi"),  # apt-get install opencv-doc
)


def find_vtest() -> Path | None:
    """OpenCV's sample video ``vtest.avi`` (768x576, 795 frames): ``$ADEDGE_VTEST`` or where
    Debian's opencv-doc puts it; None when it is nowhere (`make system-deps` fetches it)."""
    override = os.environ.get("ADEDGE_VTEST")
    if override:
        return Path(override) if Path(override).is_file() else None
    return next((path for path in VTEST_PLACES if path.is_file()), None)
