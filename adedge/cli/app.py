"""The `adedge` command line. Training and export import torch lazily, inside their
commands: `adedge stream`, `eval` and `bench` run where torch is not installed."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from adedge import __version__
from adedge.bundle import DEFAULT_WORKSPACE_MIB
from adedge.errors import AdedgeError, Interrupted, Terminated, interrupt_exit_code
from adedge.formats import (
    DEFAULT_GRAPHS,
    Format,
    backend_help,
    check_export,
    format_help,
    parse_backend,
    precisions_help,
)
from adedge.paths import MODELS_DIR, RUNS_DIR, new_run_dir, newest_run, resolve_model
from adedge.registry import METHODS, get_method
from adedge.uri import parse_key_values

if TYPE_CHECKING:
    from adedge.runtime.stream import StreamSummary


def _without_flag_types(params: list) -> list:
    """Flags take no value: --help shows no ``<bool>`` type for them."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """Our commands: no ``<bool>`` on flags in --help, and Ctrl-C/SIGTERM inside a command
    keep their exit code (130/143) on the way to :func:`main`."""

    def get_params(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        return _without_flag_types(super().get_params(ctx))

    def invoke(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            reason = str(getattr(exc, "reason", "Ctrl-C (SIGINT)"))
            raise CommandInterrupted(interrupt_exit_code(exc), reason) from None


class Group(TyperGroup):
    def get_params(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        return _without_flag_types(super().get_params(ctx))


app = typer.Typer(
    cls=Group,
    help=(
        "adedge: train one-class anomaly detectors on normal images, export them as compiled "
        "bundles, and score live frames from cameras, streams, videos and image folders."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

BACKEND_HELP = backend_help()
DATA_HELP = (
    "Data set: 'digits:anomaly=N' (scikit-learn digits), 'fmnist:anomaly=N|NAME' (Fashion-MNIST "
    "from Debian's dataset-fashion-mnist), or an image folder (one sub-folder per normal "
    "sub-class, or the MVTec layout train/good + test/<defect>, with ground_truth/ masks), or "
    "'texture:brick|grass|gravel' (a real scikit-image texture: held-out regions with synthetic "
    "defects and pixel masks; frame=N sets the frame side, default 128). "
    "Options: seed=, val=, limit=."
)


def say(message: str) -> None:
    typer.echo(message, err=True)


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"adedge {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """adedge: train one-class anomaly detectors on normal images, export them as compiled
    bundles, and score live frames from cameras, streams, videos and image folders."""


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
    )
    say(f"training {info.title} into {run_dir}")
    try:
        result = run_training(options, log=say)
    except KeyboardInterrupt as exc:
        say(f"interrupted: continue with `adedge train ... --out {run_dir} --resume`")
        raise typer.Exit(interrupt_exit_code(exc)) from None
    say(f"done: {result.best} (selected on held-out normal data), {result.last} (last epoch)")


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
        Path | None, typer.Option(help=f"Bundle folder (default: {MODELS_DIR}/<run name>).")
    ] = None,
    format: Annotated[str, typer.Option(help=format_help())] = "onnx",
    data: Annotated[
        str | None,
        typer.Option(help="Held-out normal data for parity and threshold (default: training's)."),
    ] = None,
    threshold_quantile: Annotated[
        float, typer.Option(help="Threshold = this quantile of held-out normal scores.")
    ] = 0.99,
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
    """Prune a checkpoint to its scoring subgraph and write a bundle (ONNX + adedge.json)."""
    info = get_method(method)
    targets = check_export(
        format, precisions, half=half, int8=int8, max_batch=max_batch, workspace_mib=workspace
    )
    if not 0.5 <= threshold_quantile < 1.0:
        raise AdedgeError("--threshold-quantile must be in [0.5, 1)", "e.g. 0.99")
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
            formats=targets.formats,
            half=targets.half,
            int8=int8,
            precisions=targets.graphs,
            max_batch=targets.max_batch,
            workspace_mib=workspace,
        ),
        log=say,
    )


@app.command("eval", cls=Command)
def evaluate(
    data: Annotated[str, typer.Option(help=DATA_HELP)],
    model: Annotated[
        Path | None, typer.Option(help=f"Bundle folder (default: newest in {MODELS_DIR}/).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="JSON file for the results (default: <model>/eval.json).")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Override the card's threshold for TPR/TNR.")
    ] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "onnxruntime",
    threads: Annotated[
        int, typer.Option(help="CPU threads for ONNX Runtime per stage; 0: every core.")
    ] = 0,
) -> None:
    """AUROC, and TPR/TNR at the card's threshold, of a bundle on a labelled test split."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from adedge.atomic import write_json
    from adedge.data import load
    from adedge.outputs import check_writable
    from adedge.runtime.detector import Detector
    from adedge.runtime.evaluate import evaluate as run_eval
    from adedge.runtime.stream.wiring import check_threads

    threshold = check_threshold_option(threshold)
    check_threads(threads)
    parse_backend(backend)
    model = pick_model(model)
    target = check_writable(out or Path(model) / "eval.json", "--out")  # before the work
    detector = Detector(model, backend=backend, threshold=threshold, threads=threads)
    detector.card.warn_if_unknown_method(say)
    result = run_eval(detector, load(data))
    table = Table(title=f"{result['method']} on {result['data']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("n_test", "n_anomalous", "auroc", "pixel_auroc", "threshold", "tpr", "tnr", "f1"):
        if key not in result:
            continue
        value = result[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    for kind, value in result.get("auroc_per_kind", {}).items():
        table.add_row(escape(f"auroc[{kind}]"), f"{value:.4f}")
    Console().print(table)
    write_json(target, result)
    say(f"wrote {target}")


SOURCE_HELP = (
    "camera0 / 0 / /dev/video0 / v4l2:///dev/video0 (USB camera), csi://0 (Jetson CSI), "
    "rtsp://...[?transport=udp|tcp] (tcp by default), http(s)://..., a video file or file:// "
    "URI, a folder or glob of images, or 'synthetic' (a generated surface with injected "
    "defects; options synthetic:seed=N,frames=N,size=N, texture=brick|grass|gravel for a "
    "real texture, needs scikit-image)."
)
SINK_HELP = (
    "Where results go, repeatable: file://out.avi|.mkv|.mp4 (annotated video, heatmap where "
    "the model gives one), out.jsonl or jsonl://out.jsonl (one record per frame and per "
    "event; '-' is stdout), display://0 (a window; q ends the stream)."
)


def check_threshold_option(value: float | None) -> float | None:
    """``--threshold`` must be a finite number: NaN would never alarm, inf never or always."""
    from adedge.bundle import check_threshold

    return None if value is None else check_threshold(value, "--threshold")


@app.command(cls=Command)
def stream(
    source: Annotated[str, typer.Option(help=SOURCE_HELP)] = "synthetic",
    model: Annotated[
        Path | None, typer.Option(help=f"Bundle folder (default: newest in {MODELS_DIR}/).")
    ] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "onnxruntime",
    threshold: Annotated[float | None, typer.Option(help="Override the card's threshold.")] = None,
    sink: Annotated[list[str] | None, typer.Option("--sink", help=SINK_HELP)] = None,
    jsonl: Annotated[
        Path | None,
        typer.Option(
            help="Append one JSON record per frame and per event (start, alarms, gaps, "
            "skipped inputs, end) to this file as they happen; '-' writes them to stdout."
        ),
    ] = None,
    save_video: Annotated[
        Path | None,
        typer.Option(
            help="Write an annotated video: .avi (MJPG) or .mkv (FFV1, lossless) play even "
            "when cut by a crash; .mp4 is written in --segment-minutes segments."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing --jsonl/video/summary files.")
    ] = False,
    append: Annotated[
        bool,
        typer.Option("--append", help="Add to an existing --jsonl file instead of refusing it."),
    ] = False,
    segment_minutes: Annotated[
        float | None,
        typer.Option(
            help="Split the video into files of this many minutes of video "
            "(<name>-000.avi, ...); .mp4 default 1, others one file."
        ),
    ] = None,
    headless: Annotated[
        bool, typer.Option("--headless", help="Open no window: leave out display:// sinks.")
    ] = False,
    alarm_frames: Annotated[
        int, typer.Option(help="Raise an alarm only after this many anomalous frames in a row.")
    ] = 1,
    resize: Annotated[
        str | None, typer.Option(help="Resize every frame to WIDTHxHEIGHT as it is read.")
    ] = None,
    batch: Annotated[int, typer.Option(help="Frames per inference call (files only).")] = 1,
    max_frames: Annotated[int | None, typer.Option(help="Stop after this many frames.")] = None,
    every: Annotated[int, typer.Option(help="Keep every N-th frame.")] = 1,
    fps: Annotated[float | None, typer.Option(help="Cap the rate of files and folders.")] = None,
    loop: Annotated[bool, typer.Option("--loop", help="Restart files at their end.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", help="Print only anomalous frames and the summary.")
    ] = False,
    summary_json: Annotated[
        Path | None, typer.Option(help="Write the end-of-stream summary as JSON.")
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option(help="Ground-truth CSV (frame,anomalous) to score the stream's decisions."),
    ] = None,
    threads: Annotated[
        int, typer.Option(help="CPU threads for ONNX Runtime per stage; 0: every core.")
    ] = 0,
) -> None:
    """Score every frame of a camera, stream, video or image folder (no torch needed).

    Exits 0 at the end of the source, 130 after Ctrl-C, 143 after SIGTERM (every frame
    scored is written either way), 2 for a bad option, a source that gives no frame, or
    a video that was never written.
    """
    from adedge.outputs import existing_policy
    from adedge.runtime.sinks import SinkKind, SinkSpec
    from adedge.runtime.sources import parse_resize
    from adedge.runtime.stream.wiring import StreamConfig, open_pipeline

    shortcuts = [
        SinkSpec(kind, str(path), option)
        for kind, path, option in (
            (SinkKind.JSONL, jsonl, "--jsonl"),
            (SinkKind.VIDEO, save_video, "--save-video"),
        )
        if path
    ]
    config = StreamConfig(
        source=source,
        model=model,
        backend=backend,
        threshold=threshold,
        sinks=(*(sink or []), *shortcuts),
        existing=existing_policy(overwrite, append),
        segment_minutes=segment_minutes,
        resize=parse_resize(resize) if resize else None,
        batch=batch,
        max_frames=max_frames,
        every=every,
        fps=fps,
        loop=loop,
        quiet=quiet,
        headless=headless,
        truth=truth,
        summary_json=summary_json,
        threads=threads,
        alarm_frames=alarm_frames,
    )
    pipeline = open_pipeline(config, log=say)
    summary = pipeline.run()
    typer.echo(summary.render(), err=pipeline.records_on_stdout)
    if pipeline.tally.truths:
        typer.echo(pipeline.tally.render(), err=pipeline.records_on_stdout)
    pipeline.finish(summary)
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)
    check_stream_produced(summary)


def check_stream_produced(summary: StreamSummary) -> None:
    """A stream that scored no frame (so no video, no record) is not a success."""
    if summary.frames_scored == 0:
        why = (
            f"{summary.frames_skipped} skipped ({', '.join(summary.skipped_names[:3])}"
            f"{', ...' if summary.frames_skipped > 3 else ''})"
            if summary.frames_skipped
            else "it gave no frame"
        )
        raise AdedgeError(
            f"no frame of {summary.source} was scored: {why}",
            "check that the source holds readable images or video frames",
        )


@app.command(cls=Command)
def video(
    data: Annotated[str, typer.Option(help=DATA_HELP)],
    out: Annotated[Path, typer.Option(help="Video file to write (.avi, .mp4 or .mkv).")],
    size: Annotated[int, typer.Option(help="Frame side in pixels.")] = 128,
    fps: Annotated[float, typer.Option(help="Frames per second.")] = 10.0,
    limit: Annotated[int | None, typer.Option(help="At most this many frames.")] = None,
) -> None:
    """Render a data set's labelled test split as a video, with a ground-truth CSV beside it,
    to try `adedge stream` on images whose labels are known."""
    from adedge.data import load
    from adedge.outputs import check_writable
    from adedge.runtime.labelled_video import render_test_split
    from adedge.runtime.sinks.files import video_codec

    video_codec(out)  # checked before the data is read
    check_writable(out, "--out")
    check_writable(out.with_suffix(".csv"), "--out (its ground-truth CSV)")
    if size < 8 or size > 4096 or not (math.isfinite(fps) and fps > 0):
        raise AdedgeError(
            f"--size {size} or --fps {fps} is out of range", "use --size 8..4096 and --fps > 0"
        )
    if limit is not None and limit < 1:
        raise AdedgeError(f"--limit {limit} must be at least 1", "e.g. --limit 120")
    truth = render_test_split(load(data), out, size=size, fps=fps, limit=limit)
    say(f"wrote {out} and its ground truth {truth}")


engines_app = typer.Typer(
    cls=Group,
    help="TensorRT engines of a bundle, built on this device (no torch needed).",
    no_args_is_help=True,
)
app.add_typer(engines_app, name="engines")


@engines_app.command("build", cls=Command)
def engines_build(
    model: Annotated[
        Path | None, typer.Option(help=f"Bundle folder (default: newest in {MODELS_DIR}/).")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="fp16 or fp32 (default: the card's engine precision)."),
    ] = None,
    max_batch: Annotated[
        int | None,
        typer.Option(help="Largest batch of a whole-frame stage (a tiled stage: its tiles)."),
    ] = None,
    workspace: Annotated[
        int | None, typer.Option(help="TensorRT builder workspace limit in MiB.")
    ] = None,
) -> None:
    """Build (or find up to date) the TensorRT engine of every stage of a bundle, cached in
    <bundle>/engines (or $ADEDGE_ENGINE_DIR when the bundle is read-only), so a stream or
    a service starts scoring at once. Run it on the device that will use them."""
    from adedge.bundle import load_bundle
    from adedge.formats import check_engine_settings
    from adedge.runtime.backends.engines import ensure_engine, import_tensorrt

    check_engine_settings(precision, max_batch, workspace)
    bundle = load_bundle(pick_model(model))
    import_tensorrt()  # one line where TensorRT is missing, before any stage
    for stage in bundle.card.stages:
        result = ensure_engine(
            bundle.path, stage, precision=precision, max_batch=max_batch,
            workspace_mib=workspace, log=say,
        )  # fmt: skip
        state = "built" if result.built else "up to date"
        typer.echo(f"{stage.name}: {result.engine} ({state}; {result.plan.describe()})")


def pick_model(model: Path | None) -> Path:
    return resolve_model(model, say)


@app.command(cls=Command)
def bench(
    model: Annotated[
        Path | None, typer.Option(help=f"Bundle folder (default: newest in {MODELS_DIR}/).")
    ] = None,
    batch: Annotated[str, typer.Option(help="Batch sizes to time, comma-separated.")] = "1,8,64",
    seconds: Annotated[float, typer.Option(help="Time budget per measurement.")] = 2.0,
    threads: Annotated[
        int, typer.Option(help="Threads for ONNX Runtime (and torch, sgemm with --papers); 0: all.")
    ] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "onnxruntime",
    papers: Annotated[
        bool,
        typer.Option(
            "--papers",
            help="Instead of a bundle: every method at the papers' input sizes (paper presets, "
            "random weights), torch full model and pruned vs ONNX Runtime FP32/FP16/INT8 "
            "(and TensorRT where present), the vtest.avi stream, FLOPs and the sgemm peak, "
            "beside the papers' per-image times. Needs torch, onnx and matplotlib.",
        ),
    ] = False,
    cases: Annotated[
        str, typer.Option(help="With --papers: only cases whose name contains this.")
    ] = "",
    report: Annotated[
        Path | None,
        typer.Option(help="With --papers: write REPORT.json, REPORT.md and REPORT.png."),
    ] = None,
    video: Annotated[
        Path | None,
        typer.Option(help="With --papers: the stream's video (default: vtest.avi if found)."),
    ] = None,
) -> None:
    """Latency and throughput of a bundle's graphs, or (--papers) of every method at the
    papers' sizes, beside the papers' per-image times."""
    if papers:
        bench_papers(seconds, threads, cases, report, video)
        return
    try:
        sizes = [int(b) for b in batch.split(",") if b.strip()]
    except ValueError:
        raise AdedgeError(
            f"--batch '{batch}' is not a list of integers", "e.g. --batch 1,8,64"
        ) from None
    if not sizes or min(sizes) < 1:
        raise AdedgeError("--batch needs positive integers", "e.g. --batch 1,8,64")
    parse_backend(backend)
    from adedge.bundle import load_bundle
    from adedge.runtime.bench import bench_bundle, render

    model = pick_model(model)
    load_bundle(model).card.warn_if_unknown_method(say)
    result = bench_bundle(model, sizes, seconds, threads, backend)
    typer.echo(render(result))
    if json_out:
        from adedge.atomic import write_json

        write_json(json_out, result)


def bench_papers(
    seconds: float, threads: int, cases: str, report: Path | None, video: Path | None
) -> None:
    if video is not None and not video.is_file():
        raise AdedgeError(f"--video '{video}' is not a file", "pass a video file, or leave it out")
    try:
        import matplotlib  # noqa: F401
        import onnx  # noqa: F401
        import threadpoolctl  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise AdedgeError(
            f"`adedge bench --papers` needs {exc.name}, which is not installed",
            "pip install 'adedge[bench]' (torch is pinned to the CPU wheel there)",
        ) from None
    from adedge.export.paper_cases import build_case, use_threads
    from adedge.runtime.bench.papers import run_papers
    from adedge.runtime.bench.report import render_table, write_report

    threads = threads or os.cpu_count() or 1
    results = run_papers(build_case, seconds, cases, threads, video, say, use_threads(threads))
    typer.echo(render_table(results))
    if report:
        written = write_report(results, report)
        say("wrote " + ", ".join(str(path) for path in written))


class CommandInterrupted(Exception):
    """A command stopped by Ctrl-C or SIGTERM, carried past click (which would turn every
    KeyboardInterrupt into exit 130) to :func:`main`."""

    def __init__(self, exit_code: int, reason: str) -> None:
        super().__init__(reason)
        self.exit_code, self.reason = exit_code, reason


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def main() -> None:
    """Entry point: user mistakes print one line and exit 2; Ctrl-C exits 130, SIGTERM 143
    (files being written are closed or removed first, as for Ctrl-C)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = app(standalone_mode=False)
    except AdedgeError as exc:
        typer.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except CommandInterrupted as exc:
        typer.echo(f"interrupted ({exc.reason})", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        typer.echo("interrupted", err=True)
        sys.exit(interrupt_exit_code(exc))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # usage errors (click's, or typer's own click) arrive here
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise
    code = code if isinstance(code, int) else 0
    if code in (Interrupted.exit_code, Terminated.exit_code):  # click returns what it caught
        typer.echo("interrupted", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
