"""`adedge engines build` (a bundle's TensorRT engines, built on this device) and
`adedge bench` (a bundle's latency and throughput, or with --papers every method at the
papers' sizes, which imports torch inside the command)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from adedge.cli.app import BACKEND_HELP, Command, Group, app, pick_model, say
from adedge.errors import AdedgeError
from adedge.formats import parse_backend
from adedge.paths import MODELS_DIR

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
