"""The `adedge` command line. Training and export import torch lazily, inside their
commands: `adedge stream`, `eval` and `bench` run where torch is not installed."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from adedge.bundle import DEFAULT_WORKSPACE_MIB
from adedge.errors import AdedgeError
from adedge.paths import MODELS_DIR, RUNS_DIR, new_run_dir, newest_bundle, newest_run
from adedge.registry import METHODS, get_method

app = typer.Typer(
    help=(
        "adedge: train one-class anomaly detectors on normal images, export them as compiled "
        "bundles, and score live frames from cameras, streams, videos and image folders."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXPORT_FORMATS = ("onnx", "engine")
BACKEND_HELP = (
    "onnxruntime (CPU, FP32 graph), onnxruntime:fp16 (the FP16 graph), onnxruntime:int8 (the "
    "graph of `export --int8`), tensorrt (NVIDIA GPU; engine precision from the card, built "
    "on first use), tensorrt:fp16, tensorrt:fp32."
)
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


def method_names() -> str:
    return ", ".join(sorted(METHODS))


# the config field a method's locally supplied pretrained weights go to (--backbone-weights)
PRETRAINED_FIELD = {"panda": "perceptual_weights"}  # PANDA's PL_g: a VGG-19 state dict


def parse_settings(items: list[str], backbone_weights: Path | None, method: str) -> dict[str, str]:
    """``--set KEY=VALUE`` items (and --backbone-weights) as a dict of strings."""
    settings = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise AdedgeError(f"--set '{item}' is not KEY=VALUE", "e.g. --set alpha=1e-5")
        settings[key.strip()] = value.strip()
    if backbone_weights is not None:
        if not backbone_weights.is_file():
            raise AdedgeError(
                f"--backbone-weights '{backbone_weights}' is not a file",
                "pass a local ResNet-18 state dict saved with torch.save",
            )
        settings[PRETRAINED_FIELD.get(method, "backbone_weights")] = str(backbone_weights.resolve())
    return settings


@app.command()
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
    mode: Annotated[
        str | None,
        typer.Option(
            help="Method mode: cbigan 'object' (whole image) or 'texture' (64px tiles, max over "
            "tiles; the default for texture: data); igd 'global' (whole image) or 'local' (32px "
            "patches at stride 16, local max-pooling). Export a global and a local igd run "
            "together with two --checkpoint options."
        ),
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: preset).")] = None,
    backbone_weights: Annotated[
        Path | None,
        typer.Option(
            help="Local pretrained weights where a paper uses ImageNet ones: a ResNet-18 state "
            "dict (torchvision names) for IGD's encoder, a VGG-19 one for PANDA's general "
            "perceptual loss (--set loss=pl_g). Without it every method trains from scratch."
        ),
    ] = None,
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
    except KeyboardInterrupt:
        say(f"interrupted: continue with `adedge train ... --out {run_dir} --resume`")
        raise typer.Exit(130) from None
    say(f"done: {result.best} (selected on held-out normal data), {result.last} (last epoch)")


@app.command()
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
    format: Annotated[
        str,
        typer.Option(
            help="Formats, comma-separated: 'onnx' (FP32 graph, opset 17, dynamic batch, and "
            "its mixed-precision FP16 twin <stage>.fp16.onnx, always) and 'engine' (also build "
            "TensorRT engines for this machine's GPU into <bundle>/engines)."
        ),
    ] = "onnx",
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
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Also write <stage>.int8.onnx (ONNX Runtime static QDQ quantisation, "
            "calibrated on normal training images) for CPUs: --backend onnxruntime:int8. "
            "Refused if it loses more than 0.01 test AUROC.",
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
    formats = tuple(dict.fromkeys(f.strip().lower() for f in format.split(",") if f.strip()))
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise AdedgeError(
            f"format(s) {', '.join(unknown) or '(none)'} not supported",
            f"choose from: {', '.join(EXPORT_FORMATS)}, e.g. --format onnx,engine",
        )
    if not 0.5 <= threshold_quantile < 1.0:
        raise AdedgeError("--threshold-quantile must be in [0.5, 1)", "e.g. 0.99")
    if max_batch is not None and max_batch < 1:
        raise AdedgeError("--max-batch must be at least 1", "e.g. --max-batch 8")
    if workspace < 16:
        raise AdedgeError("--workspace is in MiB and must be at least 16", "e.g. 1024")
    if "engine" in formats:
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
    from adedge.export.onnx_export import ExportOptions, export_bundle

    export_bundle(
        ExportOptions(
            list(checkpoint),
            out,
            info.name,
            data,
            threshold_quantile=threshold_quantile,
            formats=tuple(sorted(set(formats) | {"onnx"})),
            half=half,
            int8=int8,
            max_batch=max_batch,
            workspace_mib=workspace,
        ),
        log=say,
    )


def check_engine_machine() -> None:
    """``--format engine`` needs TensorRT and a GPU here: say so before any work."""
    from adedge.export.tensorrt_build import (
        TensorRTUnavailable,
        device_capability,
        import_tensorrt,
    )

    try:
        import_tensorrt()
        device_capability()
    except TensorRTUnavailable as exc:
        reason = exc.message.split(": ", 1)[-1]
        raise AdedgeError(
            f"--format engine not supported on this machine: {reason}",
            "export with --format onnx here (the bundle carries the FP16 graph) and build "
            "the engine on the GPU: `adedge export --format onnx,engine` there, or let "
            "`adedge stream --backend tensorrt` build it on first use",
        ) from None


@app.command("eval")
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
) -> None:
    """AUROC, and TPR/TNR at the card's threshold, of a bundle on a labelled test split."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from adedge.atomic import write_json
    from adedge.data import load
    from adedge.runtime.detector import Detector
    from adedge.runtime.evaluate import evaluate as run_eval

    model = pick_model(model)
    detector = Detector(model, backend=backend, threshold=threshold)
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
    target = out or Path(model) / "eval.json"
    write_json(target, result)
    say(f"wrote {target}")


SOURCE_HELP = (
    "camera0 / 0 / /dev/video0 / v4l2:///dev/video0 (USB camera), csi://0 (Jetson CSI), "
    "rtsp://..., a video file or file:// URI, a folder or glob of images, or 'synthetic' "
    "(a generated surface with injected defects; options synthetic:seed=N,frames=N,size=N, "
    "texture=brick|grass|gravel for a real texture, needs scikit-image)."
)
SINK_HELP = (
    "Where results go, repeatable: file://out.mp4|.avi|.mkv (annotated video, heatmap where "
    "the model gives one), out.jsonl or jsonl://out.jsonl (one event per frame), display://0 "
    "(a window; q ends the stream)."
)


@app.command()
def stream(
    source: Annotated[str, typer.Option(help=SOURCE_HELP)] = "synthetic",
    model: Annotated[
        Path | None, typer.Option(help=f"Bundle folder (default: newest in {MODELS_DIR}/).")
    ] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "onnxruntime",
    threshold: Annotated[float | None, typer.Option(help="Override the card's threshold.")] = None,
    sink: Annotated[list[str] | None, typer.Option("--sink", help=SINK_HELP)] = None,
    jsonl: Annotated[
        Path | None, typer.Option(help="Write one JSON line per frame (--sink out.jsonl).")
    ] = None,
    save_video: Annotated[
        Path | None, typer.Option(help="Write an annotated video (--sink file://out.avi).")
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
) -> None:
    """Score every frame of a camera, stream, video or image folder (no torch needed)."""
    from adedge.runtime.detector import Detector
    from adedge.runtime.render import read_truth
    from adedge.runtime.sinks import (
        ConsoleSink,
        DetectionTally,
        ProgressSink,
        Sink,
        SinkSpec,
        open_sinks,
        progress_wanted,
    )
    from adedge.runtime.sources import open_source, parse_resize
    from adedge.runtime.stream import StreamOptions, run_stream

    # Ctrl-C/SIGTERM still write every result already scored: nothing produced is lost.
    options = StreamOptions(batch=batch, alarm_frames=alarm_frames, drain_on_interrupt=True)
    size = parse_resize(resize) if resize else None
    targets: list[str | SinkSpec] = list(sink or [])
    if jsonl:
        targets.append(SinkSpec("jsonl", str(jsonl), "--jsonl"))
    if save_video:
        targets.append(SinkSpec("video", str(save_video), "--save-video"))
    model = pick_model(model)
    detector = Detector(model, backend=backend, threshold=threshold)
    labels = {index: bool(label) for index, label in read_truth(truth).items()} if truth else {}
    frames = open_source(
        source, loop=loop, max_frames=max_frames, every=every, fps=fps, resize=size
    )
    frames.truth = labels
    try:
        outputs = open_sinks(targets, fps=fps or 25.0, headless=headless, log=say)
    except BaseException:
        frames.close()
        raise
    tally = DetectionTally()
    sinks: list[Sink] = [ConsoleSink(quiet=quiet), tally, *outputs]
    if progress_wanted(frames):
        sinks.append(ProgressSink(frames.expected_frames()))
    say(f"streaming {frames.describe()} through {model} ({detector.card.method}, {backend})")
    summary = run_stream(detector, frames, sinks, options)
    typer.echo(summary.render())
    if tally.truths:
        typer.echo(tally.render())
    for output in outputs:
        path = getattr(output, "path", None)
        if path is not None and path.exists():
            say(f"wrote {path}")
    if summary_json:
        from adedge.atomic import write_json

        write_json(summary_json, {**summary.to_dict(), "detection": tally.summary()})


@app.command()
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
    from adedge.runtime.render import render_test_split

    truth = render_test_split(load(data), out, size=size, fps=fps, limit=limit)
    say(f"wrote {out} and its ground truth {truth}")


def pick_model(model: Path | None) -> Path:
    if model is None:
        model = newest_bundle()
        say(f"using the newest bundle: {model} (pick another with --model)")
    return model


@app.command()
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
    from adedge.runtime.backends import parse_backend

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
    from adedge.runtime.bench import bench_bundle, render

    result = bench_bundle(pick_model(model), sizes, seconds, threads, backend)
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
    from adedge.export.paper_speed import render_table, run_papers, write_report

    results = run_papers(seconds, cases, threads or os.cpu_count() or 1, video, log=say)
    typer.echo(render_table(results))
    if report:
        written = write_report(results, report)
        say("wrote " + ", ".join(str(path) for path in written))


def main() -> None:
    """Entry point: user mistakes print one line and exit 2; Ctrl-C exits 130."""
    try:
        app(standalone_mode=False)
    except AdedgeError as exc:
        typer.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
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


if __name__ == "__main__":
    main()
