"""Texture methods (CBiGAN, IGD) on real scikit-image textures with synthetic defects.

For each texture: train (resuming a run folder that exists) on frames from the top half of
the photograph, export the checkpoint chosen on held-out normal frames (best.pt; test labels
choose nothing), and evaluate the bundle through the runtime on the unseen bottom-right
quarter, half of whose frames carry one synthetic defect: image AUROC (max over tiles for
tiled stages) and pixel AUROC of the heatmap. IGD trains a global and a local model and
exports them into one bundle (s = s_G + s_L, Eq. 13).

    python benchmarks/fidelity/textures.py --method cbigan --textures brick,grass,gravel \
        --preset small --epochs 20 --work /tmp/fid-cbigan \
        --report benchmarks/fidelity/cbigan_textures.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import finished_rows, run_units, train_resuming

from adedge.cli import parse_overrides
from adedge.data import load
from adedge.export.bundle_writer import export_bundle
from adedge.export.options import ExportOptions
from adedge.runtime.detector import Detector
from adedge.runtime.evaluate import evaluate
from adedge.train.checkpoint import load_checkpoint
from adedge.train.trainer import TrainOptions

MODES = {"cbigan": ["texture"], "igd": ["global", "local"]}
PAPER = {
    "cbigan": "CBiGAN, MVTec AD textures (Table III): mean image auROC 0.85 over 5 textures",
    "igd": "IGD, MVTec AD, all 15 classes with pretrained encoders (Tables 2-3): image AUC "
    "0.926 (ImageNet) / 0.934 (SSL), pixel AUC 0.91 / 0.93",
}


def train_mode(method: str, mode: str, spec: str, folder: Path, args: argparse.Namespace) -> Path:
    train_resuming(
        TrainOptions(
            method,
            spec,
            folder,
            preset=args.preset,
            epochs=args.epochs,
            seed=args.seed,
            threads=args.threads,
            log_seconds=120,
            mode=mode,
            image_size=args.image_size,
            overrides=parse_overrides(args.set),
        ),
        f"{method} {mode}",
    )
    return folder


def run_texture(texture: str, args: argparse.Namespace) -> dict:
    spec = f"texture:{texture}" + (f",frame={args.frame}" if args.frame else "")
    started = time.time()
    runs = [
        train_mode(args.method, mode, spec, args.work / f"{texture}-{mode}", args)
        for mode in MODES[args.method]
    ]
    bundle = export_bundle(ExportOptions(runs, args.work / f"bundle-{texture}"), log=print)
    result = evaluate(Detector(bundle), load(spec))
    histories = [load_checkpoint(run / "last.pt").history for run in runs]
    return {
        "texture": texture,
        "seed": args.seed,
        "auroc": result["auroc"],
        "pixel_auroc": result.get("pixel_auroc"),
        "auroc_per_kind": result.get("auroc_per_kind"),
        "best_epochs": [load_checkpoint(run / "best.pt").epoch for run in runs],
        "epochs": [len(h) for h in histories],
        "train_minutes": sum(sum(e["seconds"] for e in h) for h in histories) / 60,
        "wall_minutes": (time.time() - started) / 60,
    }


def write_report(rows: list[dict], args: argparse.Namespace) -> None:
    mean = sum(r["auroc"] for r in rows) / len(rows)
    pixels = [r["pixel_auroc"] for r in rows if r["pixel_auroc"] is not None]
    lines = [
        f"# {args.method} on real textures with synthetic defects",
        "",
        f"Budget: preset `{args.preset}`, {args.epochs} epochs per model, CPU "
        f"({args.threads} thread), frames of {args.frame or 128} px"
        + (f" resized to {args.image_size}" if args.image_size else "")
        + (f", settings {', '.join(args.set)}" if args.set else "")
        + ". Checkpoint: best.pt (held-out normal frames); evaluation through the ONNX runtime.",
        "",
        "| texture | image AUROC | pixel AUROC | best epoch(s) | train min |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        pixel = "n/a" if r["pixel_auroc"] is None else f"{r['pixel_auroc']:.3f}"
        lines.append(
            f"| {r['texture']} | {r['auroc']:.3f} | {pixel} | {r['best_epochs']} | "
            f"{r['train_minutes']:.1f} |"
        )
    pixel_mean = f"{sum(pixels) / len(pixels):.3f}" if pixels else "n/a"
    lines += [
        f"| **mean** | **{mean:.3f}** | **{pixel_mean}** | | |",
        "",
        f"Paper: {PAPER[args.method]}. Not comparable: different images (one scikit-image "
        "photograph per texture, split into disjoint train/val/test regions, instead of "
        "MVTec's hundreds of photographs), synthetic defects instead of real ones, and a CPU "
        "budget orders of magnitude below the paper's. Comparable: the protocol (train on "
        "normal only, threshold-free AUROC, max over tiles, checkpoint not chosen on test).",
        "",
        f"Command: `python benchmarks/fidelity/textures.py --method {args.method} --textures "
        f"{','.join(r['texture'] for r in rows)} --preset {args.preset} --epochs {args.epochs}"
        + (f" --seed {args.seed}" if args.seed else "")
        + (f" --image-size {args.image_size}" if args.image_size else "")
        + "".join(f" --set {item}" for item in args.set)
        + "`",
    ]
    args.report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args.report.with_suffix(".json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=sorted(MODES), required=True)
    parser.add_argument("--textures", default="brick,grass,gravel")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--frame", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], help="config KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="training seed (data fixed)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    rows = finished_rows(
        args.report,
        lambda r: r.get("seed", 0) == args.seed and all(e == args.epochs for e in r["epochs"]),
    )
    run_units(
        rows,
        ({"texture": texture} for texture in args.textures.split(",")),
        lambda unit: run_texture(unit["texture"], args),
        lambda rows: write_report(rows, args),
    )


if __name__ == "__main__":
    main()
