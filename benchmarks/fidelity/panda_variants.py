"""PANDA-GAN's three Eq. 3 score variants (``eq3``, ``eq3_fake``, ``recon``) per seed, and
the no-skip control, on Fashion-MNIST with one class anomalous (default: 0, T-shirt).

Each unit (seed, skip) trains one run (resuming a run folder that exists) with the config's
defaults (``rec_norm=l2``, Eq. 1's norm) and scores the test split with best.pt's torch
scorer: the raw terms (reconstruction ||x - x'||_2, C(x), C(x')) and the three sums. AUROC is
unchanged by Eq. 3's min-max normalisation (a monotone map), so the raw sums give the
exported scores' AUROC; the ONNX graphs' parity with the torch scorer is tested in
tests/train/test_panda.py. Every number is information: test labels choose nothing.

    nice -n 19 python benchmarks/fidelity/panda_variants.py --seeds 0,1,2 --epochs 3 \
        --limit 4000 --work /tmp/panda-variants --report benchmarks/fidelity/panda_variants.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import run_units, train_resuming

from adedge.data import FMNIST_CLASSES, load
from adedge.export.trace import rebuild_model
from adedge.metrics import auroc
from adedge.preprocess import prepare_batch
from adedge.train.checkpoint import load_checkpoint
from adedge.train.methods.panda_score import combine, critic_probabilities, reconstruction_error
from adedge.train.trainer import TrainOptions

VARIANTS = ("eq3", "eq3_fake", "recon")


@torch.no_grad()
def variant_aurocs(checkpoint_path: Path, spec: str) -> dict[str, float]:
    """AUROC on the test split of each raw term and of each Eq. 3 variant."""
    checkpoint = load_checkpoint(checkpoint_path, "panda")
    _, config, model = rebuild_model(checkpoint)
    data = load(spec)
    images = torch.from_numpy(prepare_batch(data.test.images, checkpoint.input_spec))
    recs, reals, fakes = [], [], []
    for chunk in images.split(512):
        recon = model.generator(chunk).recon
        recs.append(reconstruction_error(chunk, recon, config.rec_norm)[0])
        c_real, c_fake = critic_probabilities(model.critic, chunk, recon)
        reals.append(c_real)
        fakes.append(c_fake)
    rec, c_real, c_fake = torch.cat(recs), torch.cat(reals), torch.cat(fakes)
    labels = data.test.labels
    out = {
        f"term_recon_{config.rec_norm}": auroc(labels, rec.numpy()),
        "term_C_x": auroc(labels, c_real.numpy()),
        "term_C_x_prime": auroc(labels, c_fake.numpy()),
    }
    for variant in VARIANTS:
        out[variant] = auroc(labels, combine(rec, c_real, c_fake, variant).numpy())
    return out


def run_unit(seed: int, skip: bool, args: argparse.Namespace) -> dict:
    spec = f"fmnist:anomaly={args.anomaly}" + (f",limit={args.limit}" if args.limit else "")
    run_dir = args.work / f"seed{seed}{'' if skip else '-noskip'}"
    started = time.time()
    history = train_resuming(
        TrainOptions(
            "panda",
            spec,
            run_dir,
            preset=args.preset,
            epochs=args.epochs,
            image_size=32,
            seed=seed,
            threads=args.threads,
            monitor_test=False,
            log_seconds=120,
            overrides={"skip": str(skip)},
        ),
        f"seed {seed} skip {skip}",
    )
    best = load_checkpoint(run_dir / "best.pt")
    return {
        "seed": seed,
        "skip": skip,
        "anomaly": args.anomaly,
        "name": FMNIST_CLASSES[args.anomaly],
        "best_epoch": best.epoch,
        "epochs": len(history),
        "best": variant_aurocs(run_dir / "best.pt", spec),
        "last": variant_aurocs(run_dir / "last.pt", spec),
        "val_loss": [h["val_loss"] for h in history],
        "val_pseudo_auroc": [h.get("val_pseudo_auroc") for h in history],
        "train_minutes": sum(h["seconds"] for h in history) / 60,
        "wall_minutes": (time.time() - started) / 60,
    }


def write_report(rows: list[dict], args: argparse.Namespace) -> None:
    lines = [
        f"# PANDA-GAN score variants, Fashion-MNIST class {args.anomaly} anomalous",
        "",
        f"Budget: preset `{args.preset}`, {args.epochs} epochs, training images capped at "
        f"{args.limit or 'all'}, 32x32, CPU ({args.threads} thread), rec_norm l2 (Eq. 1). "
        "best.pt: lowest held-out normal pixel MSE (PANDA's rule). Test AUROC of each Eq. 3 "
        "variant (information: nothing is chosen on it), torch scorer.",
        "",
        "| seed | skip | checkpoint | eq3 | eq3_fake | recon | C(x) | C(x') | epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for which in ("best", "last"):
            a = r[which]
            epoch = r["best_epoch"] if which == "best" else r["epochs"]
            lines.append(
                f"| {r['seed']} | {r['skip']} | {which} | {a['eq3']:.3f} | {a['eq3_fake']:.3f} "
                f"| {a['recon']:.3f} | {a['term_C_x']:.3f} | {a['term_C_x_prime']:.3f} | "
                f"{epoch}/{r['epochs']} |"
            )
    args.report.write_text("\n".join(lines) + "\n")
    args.report.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--skip", default="true", help="true, false or both")
    parser.add_argument("--anomaly", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=4000)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/panda-variants"))
    parser.add_argument(
        "--report", type=Path, default=Path("benchmarks/fidelity/panda_variants.md")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    skips = {"true": [True], "false": [False], "both": [True, False]}[args.skip]
    run_units(
        [],
        ({"seed": int(s), "skip": k} for s in args.seeds.split(",") for k in skips),
        lambda unit: run_unit(unit["seed"], unit["skip"], args),
        lambda rows: write_report(rows, args),
    )


if __name__ == "__main__":
    main()
