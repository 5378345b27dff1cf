"""`adedge train` and `adedge export`, with the help and --set parsing they share. Both
import torch (the training and export stages) inside the command, never at module level."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from adedge.bundle import DEFAULT_WORKSPACE_MIB
from adedge.card import DEFAULT_PIXEL_PERCENTILE
from adedge.cli.app import DATA_HELP, Command, app, say
from adedge.errors import AdedgeError, interrupt_exit_code
from adedge.formats import DEFAULT_GRAPHS, Format, check_export, format_help, precisions_help
from adedge.paths import MODELS_DIR, RUNS_DIR, new_run_dir, newest_run
from adedge.registry import METHODS, get_method
from adedge.uri import parse_key_values


def method_names() -> str:
    return ", ".join(sorted(METHODS))


def pretrained_help() -> str:
    """--backbone-weights' help: what each method that uses pretrained weights takes."""
    takes = [
        f"{info.name}: {info.pretrained_weights}"
        for info in (METHODS[name] for name in sorted(METHODS))
        if info.pretrained_weights
    ]
    return (
        "Local pretrained weights where a paper uses ImageNet ones ("
        + "; ".join(takes)
        + "). Without it every method trains from scratch."
    )


def modes_help() -> str:
    """--mode's help: each method's modes and what they do."""
    described = [
        f"{info.name} " + " or ".join(f"'{mode}' ({what})" for mode, what in info.modes.items())
        for info in (METHODS[name] for name in sorted(METHODS))
        if info.modes
    ]
    return "Method mode: " + "; ".join(described) + "."


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` items as a dict of strings (the method's config checks the keys)."""
    return parse_key_values(
        items,
        problem=lambda item: AdedgeError(
            f"--set '{item}' is not KEY=VALUE", "e.g. --set alpha=1e-5"
        ),
    )


def parse_settings(items: list[str], backbone_weights: Path | None, method: str) -> dict[str, str]:
    """``--set KEY=VALUE`` items (and --backbone-weights, under the config field the method
    registers for its pretrained weights) as a dict of strings."""
    settings = parse_overrides(items)
    if backbone_weights is not None:
        info = get_method(method)
        if info.pretrained_field is None:
            raise AdedgeError(
                f"--backbone-weights: {info.name} uses no pretrained weights (it trains from "
                "scratch)",
                "leave out --backbone-weights",
            )
        if not backbone_weights.is_file():
            raise AdedgeError(
                f"--backbone-weights '{backbone_weights}' is not a file",
                f"pass {info.pretrained_weights}, saved with torch.save",
            )
        settings[info.pretrained_field] = str(backbone_weights.resolve())
    return settings


@app.command(cls=Command)
def train(
    method: Annotated[str, typer.Option(help=f"Method to train: {method_names()}.")],
    data: Annotated[str, typer.Option(help=DATA_HELP)],
    out: Annotated[
        Path | None, typer.Option(help=f"Run folder (default: {RUNS_DIR}/<method>-<time>).")
    ] = None,
    preset: Annotated[
        str, typer.Option(help="Hyper-parameter preset: paper (the paper's), small, tiny (tests).")
    ] = "paper",
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the preset's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: preset).")] = None,
    image_size: Annotated[
        int | None,
        typer.Option(
            help="Square size images are resized to, a power of two (32, ..., 512); tiled modes "
            "then cut it into tiles. Default: the data's own size."
        ),
    ] = None,
    mode: Annotated[str | None, typer.Option(help=modes_help())] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: preset).")] = None,
    backbone_weights: Annotated[Path | None, typer.Option(help=pretrained_help())] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override one config field, repeatable: --set alpha=1e-5 --set gp_weight=10.",
        ),
    ] = None,
    weak_labels: Annotated[
        bool,
        typer.Option(
            "--weak-labels",
            help="Derive normal sub-classes by k-means (k by silhouette) for unlabelled data.",
        ),
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the weights and the batch order.")] = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")
    ] = False,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    checkpoint_minutes: Annotated[
        float, typer.Option(help="Also save last.pt this often inside an epoch.")
    ] = 5.0,
    no_monitor: Annotated[
        bool, typer.Option("--no-monitor", help="Skip logging the test AUROC each epoch.")
    ] = False,
    nproc: Annotated[
        int,
        typer.Option(
            help="Data-parallel training processes on this machine (gloo on CPU, NCCL on "
            "GPUs); each takes --batch-size / N of every global batch. Under torchrun, "
            "leave it out: torchrun's WORLD_SIZE is used."
        ),
    ] = 1,
) -> None:
    """Train a method on normal images; writes last.pt, best.pt and the loss history."""
    info = get_method(method)
    if resume and out is None:
        raise AdedgeError("--resume needs --out naming the run folder to continue")
    from adedge.train.methods import load_method

    if preset not in load_method(info.name).presets:
        raise AdedgeError(
            f"unknown preset '{preset}'",
            f"choose one of: {', '.join(load_method(info.name).presets)}",
        )
    from adedge.train.distributed import check_global_batch, check_nproc

    check_nproc(nproc)
    if batch_size is not None:
        check_global_batch(batch_size, nproc)  # the preset's is checked once it is known
    from adedge.train.trainer import TrainOptions
    from adedge.train.trainer import train as run_training

    run_dir = out or new_run_dir(info.name)
    options = TrainOptions(
        method=info.name,
        data=data,
        out=run_dir,
        preset=preset,
        epochs=epochs,
        batch_size=batch_size,
        image_size=image_size,
        lr=lr,
        weak_labels=weak_labels,
        device=device,
        seed=seed,
        resume=resume,
        threads=threads,
        checkpoint_minutes=checkpoint_minutes,
        monitor_test=not no_monitor,
        mode=mode,
        overrides=parse_settings(set_ or [], backbone_weights, info.name),
        nproc=nproc,
    )
    if os.environ.get("RANK", "0") == "0":  # torchrun's other ranks stay quiet
        say(f"training {info.title} into {run_dir}")
    try:
        result = run_training(options, log=say)
        if not result.main:  # another rank of a torchrun job: rank 0 reports
            return
    except KeyboardInterrupt as exc:
        say(f"interrupted: continue with `adedge train ... --out {run_dir} --resume`")
        raise typer.Exit(interrupt_exit_code(exc)) from None
    say(f"done: {result.best} ({picked_by(result.history)}), {result.last} (last epoch)")


RULE_WORDS = {
    "last": "the last epoch, selection=last",
    "pseudo": "the best pseudo-anomaly AUROC on held-out normal data, selection=pseudo",
    "val_loss": "the lowest held-out validation loss, selection=val_loss",
}


def picked_by(history: list[dict]) -> str:
    """What ``best.pt`` is, from the last history record (its rule and epoch)."""
    if not history:
        return "selected on held-out normal data"
    last = history[-1]
    rule = RULE_WORDS.get(str(last.get("selection")), "selected on held-out normal data")
    epoch = last.get("best_epoch")
    return f"epoch {epoch}: {rule}" if epoch is not None else rule


@app.command(cls=Command)
def export(
    method: Annotated[str, typer.Option(help=f"Method of the checkpoint: {method_names()}.")],
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            help=f"Checkpoint or run folder (default: newest run in {RUNS_DIR}/). Repeat it to "
            "put several stages of one method in one bundle (IGD: a global and a local run)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help=f"Bundle folder (default: {MODELS_DIR}/<run name>), for every --format: "
            "a Triton repository is built from the bundle, which stays for local fallback "
            "and parity."
        ),
    ] = None,
    format: Annotated[str, typer.Option(help=format_help())] = "onnx",
    triton_repo: Annotated[
        Path | None,
        typer.Option(
            help=f"--format triton: the Triton model repository the bundle's stages are added "
            f"to as a new version (default: {MODELS_DIR}/triton)."
        ),
    ] = None,
    triton_python: Annotated[
        str | None,
        typer.Option(
            help="--format triton: a python with tritonclient for the schema check "
            "(default: $ADEDGE_TRITON_PYTHON, else this one)."
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help="Held-out normal data for parity and threshold (default: training's)."),
    ] = None,
    threshold_quantile: Annotated[
        float, typer.Option(help="Threshold = this quantile of held-out normal scores.")
    ] = 0.99,
    pixel_percentile: Annotated[
        float,
        typer.Option(
            help="Models with a heatmap: the pixel threshold is this percentile of held-out "
            "normal pixel scores (lower catches fainter defects and raises more false alarms)."
        ),
    ] = DEFAULT_PIXEL_PERCENTILE,
    half: Annotated[
        bool,
        typer.Option(
            "--half",
            help="TensorRT engines in FP16 (built strongly typed from the FP16 graph); "
            "without it FP32. Recorded in the card: devices that build on first use follow it.",
        ),
    ] = False,
    precisions: Annotated[str, typer.Option(help=precisions_help())] = ",".join(DEFAULT_GRAPHS),
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Add int8 to --precisions: <stage>.int8.onnx (ONNX Runtime static QDQ "
            "quantisation, calibrated on normal training images) for CPUs: --backend "
            "onnxruntime:int8. Refused if it loses more than 0.01 test AUROC.",
        ),
    ] = False,
    max_batch: Annotated[
        int | None,
        typer.Option(
            help="Largest batch of a whole-frame stage's engine (default 8); a tiled stage's is "
            "its tiles per frame."
        ),
    ] = None,
    workspace: Annotated[
        int, typer.Option(help="TensorRT builder workspace limit in MiB.")
    ] = DEFAULT_WORKSPACE_MIB,
) -> None:
    """Prune a checkpoint to its scoring subgraph and write a bundle (ONNX + adedge.json);
    --format triton then adds it to a Triton model repository."""
    info = get_method(method)
    targets = check_export(
        format,
        precisions,
        half=half,
        int8=int8,
        max_batch=max_batch,
        workspace_mib=workspace,
        triton_repo=triton_repo,
        triton_python=triton_python,
    )
    if not 0.5 <= threshold_quantile < 1.0:
        raise AdedgeError("--threshold-quantile must be in [0.5, 1)", "e.g. 0.99")
    from adedge.export.pixel_threshold import check_percentile

    check_percentile(pixel_percentile, "--pixel-percentile")
    from adedge.export.options import check_engine_machine

    if Format.ENGINE in targets.formats:
        check_engine_machine()
    if not checkpoint:
        checkpoint = [newest_run(info.name)]
        say(f"using the newest {info.name} run: {checkpoint[0]} (pick another with --checkpoint)")
    for path in checkpoint:
        if not path.exists():
            raise AdedgeError(
                f"checkpoint '{path}' does not exist",
                "pass a .pt file written by `adedge train` (or its run folder) with --checkpoint",
            )
    if out is None:
        first = checkpoint[0]
        out = MODELS_DIR / (first.parent.name if first.is_file() else first.name)
        say(f"writing the bundle to {out} (choose with --out)")
    from adedge.export.bundle_writer import export_bundle
    from adedge.export.options import ExportOptions

    export_bundle(
        ExportOptions(
            list(checkpoint),
            out,
            info.name,
            data,
            threshold_quantile=threshold_quantile,
            pixel_percentile=pixel_percentile,
            formats=targets.formats,
            half=targets.half,
            int8=int8,
            precisions=targets.graphs,
            max_batch=targets.max_batch,
            workspace_mib=workspace,
            triton_repo=triton_repo,
            triton_python=triton_python,
        ),
        log=say,
    )
