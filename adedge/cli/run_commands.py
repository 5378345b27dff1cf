"""The commands that score frames with a bundle, without torch: `adedge eval` (a labelled
test split), `adedge stream` (a camera, stream, video or image folder) and `adedge video`
(a labelled test split rendered as a video to stream)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from adedge.cli.app import BACKEND_HELP, DATA_HELP, MODEL_HELP, Command, app, pick_model_for, say
from adedge.errors import AdedgeError
from adedge.formats import parse_backend

if TYPE_CHECKING:
    from adedge.runtime.stream import StreamSummary


# pixel decisions (a card with a pixel threshold), the same on eval and stream
MinArea = Annotated[
    float | None,
    typer.Option(
        help="Pixels (of the image or frame as scored) a heatmap region above the card's pixel "
        "threshold must exceed to make it anomalous; default: the card's."
    ),
]
NoPixel = Annotated[
    bool,
    typer.Option("--no-pixel", help="Decide on the image score alone (no heatmap regions)."),
]


@app.command("eval", cls=Command)
def evaluate(
    data: Annotated[str, typer.Option(help=DATA_HELP)],
    model: Annotated[Path | None, typer.Option(help=MODEL_HELP)] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="JSON file for the results (default: <model>/eval.json; with a triton "
            "backend and no --model, eval-<Triton model>.json here)."
        ),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Override the card's threshold for TPR/TNR.")
    ] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "onnxruntime",
    threads: Annotated[
        int, typer.Option(help="CPU threads for ONNX Runtime per stage; 0: every core.")
    ] = 0,
    target_tpr: Annotated[
        str,
        typer.Option(
            help="Target TPRs for the operating points, comma-separated, each in (0, 1]: the "
            "lowest false-alarm rate that catches that share of anomalies."
        ),
    ] = "0.90,0.95,0.99",
    plots: Annotated[
        Path | None,
        typer.Option(
            help="Folder for <out>-roc.png and <out>-histogram.png (default: the --out folder)."
        ),
    ] = None,
    min_area: MinArea = None,
    no_pixel: NoPixel = False,
) -> None:
    """AUROC, and the operating points (threshold, TPR, FPR, precision, F1) of a bundle on a
    labelled test split: the card's threshold, the F1-optimal one and each target TPR's;
    writes them to the JSON, and the ROC curve and a score histogram as PNG."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from adedge.atomic import write_json
    from adedge.data import load
    from adedge.outputs import check_writable
    from adedge.runtime.detector import Detector
    from adedge.runtime.evaluate import evaluate_scores
    from adedge.runtime.stream.wiring import check_threads

    targets = parse_targets(target_tpr)
    threshold = check_threshold_option(threshold)
    check_threads(threads)
    choice = parse_backend(backend)
    model = pick_model_for(model, backend)
    if out is None:
        remote = choice.remote
        out = Path(model or ".") / ("eval.json" if remote is None else f"eval-{remote.model}.json")
    target = check_writable(out, "--out")  # before the work
    folder = target.parent if plots is None else plots
    pictures = [folder / f"{target.stem}-{kind}.png" for kind in ("roc", "histogram")]
    for picture in pictures:
        check_writable(picture, "--plots")
    detector = Detector(
        model, backend=backend, threshold=threshold, threads=threads, min_area=min_area,
        pixel=not no_pixel,
    )  # fmt: skip
    detector.card.warn_if_unknown_method(say)
    try:
        result, labels, scores = evaluate_scores(detector, load(data), targets=targets)
    finally:
        detector.close()
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
    Console().print(points_table(result["operating_points"]))
    if "pixel_decisions" in result:
        pixel = result["pixel_decisions"]
        say(
            f"+pixel: {pixel['rule']}; images with such a region: {pixel['flagged_by_regions']}"
            f", anomalies caught only by one: {pixel['anomalous_caught_only_by_regions']}"
        )
    write_json(target, result)
    say(f"wrote {target}")
    write_eval_plots(result, labels, scores, pictures)
    say(f"wrote {pictures[0]} and {pictures[1]}")


def parse_targets(text: str) -> tuple[float, ...]:
    """``--target-tpr 0.9,0.95``: each a number in (0, 1] (TPR 0 is reached by flagging
    nothing, above 1 by nothing at all)."""
    targets = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not 0.0 < value <= 1.0:
            raise AdedgeError(
                f"--target-tpr '{part.strip()}' is not a TPR in (0, 1]",
                "e.g. --target-tpr 0.9,0.99",
            )
        targets.append(value)
    return tuple(targets)


def points_table(points: list[dict]):
    """The operating points as a rich table (precision '-' where nothing is flagged)."""
    from rich.table import Table

    title = "operating points (anomalous: score > threshold"
    if any(point["name"].endswith("+pixel") for point in points):
        title += "; +pixel: or a heatmap region above the minimum area"
    table = Table(title=title + ")")
    for name in ("point", "threshold", "TPR", "FPR", "precision", "F1"):
        table.add_column(name, justify="left" if name == "point" else "right")
    for point in points:
        precision = point["precision"]
        table.add_row(
            point["name"], f"{point['threshold']:.6g}", f"{point['tpr']:.4f}",
            f"{point['fpr']:.4f}", "-" if precision is None else f"{precision:.4f}",
            f"{point['f1']:.4f}",
        )  # fmt: skip
    return table


def write_eval_plots(result: dict, labels, scores, pictures: list[Path]) -> None:
    """The ROC curve with the operating points, and the score histogram with the threshold."""
    from adedge.runtime.eval_plots import histogram_image, roc_image, write_png
    from adedge.runtime.operating_points import OperatingPoint, curve

    title = f"{result['method']} on {result['data']}"
    fields = ("name", "threshold", "tp", "fp", "tn", "fn")
    marked = [OperatingPoint(*(p[f] for f in fields)) for p in result["operating_points"]]
    write_png(pictures[0], roc_image(curve(labels, scores), result["auroc"], marked, title))
    first = marked[0]
    write_png(pictures[1], histogram_image(labels, scores, first.threshold, first.name, title))


SOURCE_HELP = (
    "camera0 / 0 / /dev/video0 / v4l2:///dev/video0 (USB camera), csi://0 (Jetson CSI), "
    "rtsp://...[?transport=udp|tcp] (tcp by default), http(s)://..., a video file or file:// "
    "URI, a folder or glob of images, or 'synthetic' (a generated surface with injected "
    "defects; options synthetic:seed=N,frames=N,size=N, texture=brick|grass|gravel for a "
    "real texture, needs scikit-image; motion=conveyor,speed=N runs the texture past at its "
    "own scale)."
)
SINK_HELP = (
    "Where results go, repeatable: file://out.avi|.mkv|.mp4 (annotated video, heatmap where "
    "the model gives one), out.jsonl or jsonl://out.jsonl (one record per frame and per "
    "event; '-' is stdout), display://0 (a window; q ends the stream), snapshots://DIR "
    "(one annotated JPEG per alarm)."
)


def check_threshold_option(value: float | None) -> float | None:
    """``--threshold`` must be a finite number: NaN would never alarm, inf never or always."""
    from adedge.bundle import check_threshold

    return None if value is None else check_threshold(value, "--threshold")


@app.command(cls=Command)
def stream(
    source: Annotated[str, typer.Option(help=SOURCE_HELP)] = "synthetic",
    model: Annotated[Path | None, typer.Option(help=MODEL_HELP)] = None,
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
    snapshots: Annotated[
        Path | None,
        typer.Option(
            help="Write the frame that raises each alarm, annotated (outlined regions), as "
            "DIR/alarm-<frame>.jpg."
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace existing --jsonl/video/summary files and snapshots."
        ),
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
    min_area: MinArea = None,
    no_pixel: NoPixel = False,
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
            (SinkKind.SNAPSHOTS, snapshots, "--snapshots"),
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
        min_area=min_area,
        pixel=not no_pixel,
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
