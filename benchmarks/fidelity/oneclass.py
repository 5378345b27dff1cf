r"""A method under the one-class protocol (one class normal, the other nine anomalous).

For each normal class: train (resuming a run folder that exists), export best.pt (chosen on
held-out normal images; test labels choose nothing), evaluate the bundle through the runtime
on the test split (Fashion-MNIST: its official 10k test set), and write a markdown table and
JSON beside the paper's number.

    python benchmarks/fidelity/oneclass.py --method igd --data fmnist --classes 0-9 \
        --seeds 0 --preset small --epochs 2 --work /tmp/igd-fmnist \
        --report benchmarks/fidelity/igd_fmnist.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import finished_rows, parse_classes, run_units, train_resuming

from adedge.cli import parse_overrides
from adedge.data import load
from adedge.export.bundle_writer import export_bundle
from adedge.export.options import ExportOptions
from adedge.runtime.detector import Detector
from adedge.runtime.evaluate import evaluate
from adedge.train.checkpoint import load_checkpoint
from adedge.train.trainer import TrainOptions

COMPARABLE = {
    ("ddrid", "fmnist"): (
        "The paper reports no Fashion-MNIST number; its nearest protocol is the same one-class "
        "protocol on MNIST (Table 2: mean AUROC 0.962, 250 epochs, full widths). This row "
        "shows the method beyond the data it was tuned on, at a small CPU budget."
    ),
    ("igd", "fmnist"): (
        "Comparable: the protocol (one class normal, the nine others anomalous, the official "
        "10k test set), the data, the losses and the score (Eqs. 12-14). Not: the budget (the "
        "`small` preset is a quarter of the widths, 2 epochs against 256), and the selection "
        "(best.pt on held-out normal images; the authors log the best test AUC over "
        "evaluations). The paper's 'Scratch' row is the like-for-like one: no ImageNet "
        "weights here."
    ),
}
PAPER = {
    ("igd", "fmnist"): ("IGD Table 1, Fashion-MNIST, 'Scratch' row: mean AUC", 0.9201),
    ("ddrid", "mnist"): ("DDR-ID Table 2, MNIST: mean AUROC", 0.962),
}


def run_class(index: int, seed: int, args: argparse.Namespace) -> dict:
    spec = f"{args.data}:normal={index}" + (f",limit={args.limit}" if args.limit else "")
    run_dir = args.work / (f"class{index}" if seed == 0 else f"class{index}-seed{seed}")
    started = time.time()
    history = train_resuming(
        TrainOptions(
            args.method,
            spec,
            run_dir,
            preset=args.preset,
            epochs=args.epochs,
            seed=seed,
            threads=args.threads,
            log_seconds=120,
            overrides=parse_overrides(args.set),
        ),
        f"class {index} seed {seed}",
    )
    bundle = export_bundle(ExportOptions(run_dir, run_dir.with_name(run_dir.name + "-bundle")))
    result = evaluate(Detector(bundle), load(spec))
    return {
        "class": index,
        "seed": seed,
        "preset": args.preset,
        "auroc": result["auroc"],
        "best_epoch": load_checkpoint(run_dir / "best.pt").epoch,
        "epochs": len(history),
        "train_minutes": sum(h["seconds"] for h in history) / 60,
        "last_epoch_test_auroc_monitor": history[-1].get("test_auroc_monitor"),
        "wall_minutes": (time.time() - started) / 60,
    }


def summarise(values: list[float]) -> str:
    """``mean`` for one value, ``mean ± std (n)`` for several (population std over seeds)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f} ({len(values)} seeds)"


def write_report(rows: list[dict], args: argparse.Namespace) -> None:
    classes = sorted({r["class"] for r in rows})
    per_class = {c: [r for r in rows if r["class"] == c] for c in classes}
    seeds = sorted({r["seed"] for r in rows})
    seed_means = [
        np.mean([r["auroc"] for r in rows if r["seed"] == s])
        for s in seeds
        if all(any(r["seed"] == s for r in per_class[c]) for c in classes)
    ]
    paper = PAPER.get((args.method, args.data))
    lines = [
        f"# {args.method} on {args.data}, one-class protocol",
        "",
        f"Budget: preset `{args.preset}`, {args.epochs} epochs, "
        + (f"at most {args.limit} training images" if args.limit else "all training images")
        + f" of the normal class, CPU ({args.threads} thread)"
        + (f", settings {', '.join(args.set)}" if args.set else "")
        + ". best.pt is chosen on held-out normal images; AUROC through the ONNX runtime.",
        "",
        "| normal class | AUROC | best epoch | train min |",
        "|---|---|---|---|",
        *(
            f"| {c} | {summarise([r['auroc'] for r in group])} | "
            f"{'/'.join(str(r['best_epoch']) for r in group)} of {group[0]['epochs']} | "
            f"{sum(r['train_minutes'] for r in group) / len(group):.1f} |"
            for c, group in per_class.items()
        ),
        f"| **mean of {len(classes)} classes** | **{summarise(seed_means)}** | | |",
        "",
        "With several seeds, the mean row is the mean ± std over seeds of the per-seed class mean.",
        "",
    ]
    if paper:
        lines.append(f"Paper: {paper[0]} {paper[1]} (all 10 classes, full training budget).")
    if (args.method, args.data) in COMPARABLE:
        lines += ([""] if lines[-1] else []) + [COMPARABLE[(args.method, args.data)], ""]
    lines.append(
        f"Command: `python benchmarks/fidelity/oneclass.py --method {args.method} --data "
        f"{args.data} --classes {args.classes} --seeds {args.seeds} --preset {args.preset} "
        f"--epochs {args.epochs}"
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
    parser.add_argument("--seeds", default="0", help="training seeds, e.g. 0-2")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], help="config KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    rows = finished_rows(
        args.report, lambda r: r.get("preset") == args.preset and r["epochs"] == args.epochs
    )
    units = (
        {"class": index, "seed": seed}
        for seed in parse_classes(args.seeds)
        for index in parse_classes(args.classes)
    )
    run_units(
        rows,
        units,
        lambda unit: run_class(unit["class"], unit["seed"], args),
        lambda rows: write_report(rows, args),
    )


if __name__ == "__main__":
    main()
