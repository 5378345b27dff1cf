"""A method under the one-class protocol (one class normal, the other nine anomalous).

For each normal class: train (resuming a run folder that exists), export best.pt (chosen on
held-out normal images; test labels choose nothing), evaluate the bundle through the runtime
on the test split (Fashion-MNIST: its official 10k test set), and write a markdown table and
JSON beside the paper's number.

    python benchmarks/fidelity/oneclass.py --method igd --data fmnist --classes 0-9 \
        --preset small --epochs 2 --work /tmp/igd-fmnist --report benchmarks/fidelity/igd_fmnist.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import parse_classes, train_resuming

from adedge.data import load
from adedge.export.onnx_export import ExportOptions, export_bundle
from adedge.runtime.detector import Detector
from adedge.runtime.evaluate import evaluate
from adedge.train.checkpoint import load_checkpoint
from adedge.train.trainer import TrainOptions

PAPER = {
    ("igd", "fmnist"): ("IGD Table 1, Fashion-MNIST, 'Scratch' row: mean AUC", 0.9201),
    ("ddrid", "mnist"): ("DDR-ID Table 2, MNIST: mean AUROC", 0.962),
}


def run_class(index: int, args: argparse.Namespace) -> dict:
    spec = f"{args.data}:normal={index}" + (f",limit={args.limit}" if args.limit else "")
    run_dir = args.work / f"class{index}"
    started = time.time()
    history = train_resuming(
        TrainOptions(
            args.method,
            spec,
            run_dir,
            preset=args.preset,
            epochs=args.epochs,
            threads=args.threads,
            log_seconds=120,
            overrides=dict(item.split("=", 1) for item in args.set),
        ),
        f"class {index}",
    )
    bundle = export_bundle(ExportOptions(run_dir, args.work / f"bundle{index}"), log=print)
    result = evaluate(Detector(bundle), load(spec))
    return {
        "class": index,
        "auroc": result["auroc"],
        "best_epoch": load_checkpoint(run_dir / "best.pt")["epoch"],
        "epochs": len(history),
        "train_minutes": sum(h["seconds"] for h in history) / 60,
        "last_epoch_test_auroc_monitor": history[-1].get("test_auroc_monitor"),
        "wall_minutes": (time.time() - started) / 60,
    }


def write_report(rows: list[dict], args: argparse.Namespace) -> None:
    mean = sum(r["auroc"] for r in rows) / len(rows)
    paper = PAPER.get((args.method, args.data))
    lines = [
        f"# {args.method} on {args.data}, one-class protocol",
        "",
        f"Budget: preset `{args.preset}`, {args.epochs} epochs, training images capped at "
        f"{args.limit or 'all'} per class, CPU ({args.threads} thread)"
        + (f", settings {', '.join(args.set)}" if args.set else "")
        + ". best.pt is chosen on held-out normal images; AUROC through the ONNX runtime.",
        "",
        "| normal class | AUROC | best epoch | train min |",
        "|---|---|---|---|",
        *(
            f"| {r['class']} | {r['auroc']:.3f} | {r['best_epoch']}/{r['epochs']} | "
            f"{r['train_minutes']:.1f} |"
            for r in rows
        ),
        f"| **mean of {len(rows)}** | **{mean:.3f}** | | |",
        "",
    ]
    if paper:
        lines.append(f"Paper: {paper[0]} {paper[1]} (all 10 classes, full training budget).")
    lines.append(
        f"Command: `python benchmarks/fidelity/oneclass.py --method {args.method} --data "
        f"{args.data} --classes {args.classes} --preset {args.preset} --epochs {args.epochs}"
        + (f" --limit {args.limit}" if args.limit else "")
        + "".join(f" --set {item}" for item in args.set)
        + "`"
    )
    args.report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args.report.with_suffix(".json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--data", choices=("digits", "mnist", "fmnist"), default="fmnist")
    parser.add_argument("--classes", default="0-9")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], help="config KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    for index in parse_classes(args.classes):
        rows.append(run_class(index, args))
        write_report(rows, args)
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
