"""`adedge engines build` (a bundle's TensorRT engines, built on this device) and
`adedge bench` (a bundle's latency and throughput, or with --papers every method at the
papers' sizes, which imports torch inside the command, or with --serve N cameras through one
service against N `adedge stream` processes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from adedge.cli.app import BACKEND_HELP, Command, Group, app, pick_model, pick_model_for, say
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
    seconds: Annotated[
        float | None,
        typer.Option(
            help="Time budget per measurement (default 2); with --serve the window counted "
            "per case (default 10)."
        ),
    ] = None,
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
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Instead of one bundle's graphs: N cameras through one service (one "
            "shared engine) against N `adedge stream` processes, unpaced, for "
            "--model (a whole-frame bundle) and --tiled-model; without either, stand-in "
            "convolutional bundles (need onnx). A markdown table, and --json.",
        ),
    ] = False,
    tiled_model: Annotated[
        Path | None, typer.Option(help="With --serve: the tiled bundle to measure.")
    ] = None,
    cameras: Annotated[
        str, typer.Option(help="With --serve: camera counts N, comma-separated.")
    ] = "1,2,4,8",
    sources: Annotated[
        str,
        typer.Option(
            help="With --serve: source kinds, vtest (vtest.avi looped) and texture "
            "(synthetic grass, 512 px)."
        ),
    ] = "vtest,texture",
    warmup: Annotated[
        float, typer.Option(help="With --serve: seconds each case runs before it is counted.")
    ] = 3.0,
    max_batch: Annotated[
        int | None,
        typer.Option(help="With --serve: the service engine's max_batch (default: config's)."),
    ] = None,
    max_delay_ms: Annotated[
        float | None,
        typer.Option(help="With --serve: the engine's max_delay_ms (default: config's)."),
    ] = None,
) -> None:
    """Latency and throughput of a bundle's graphs, or (--papers) of every method at the
    papers' sizes, beside the papers' per-image times, or (--serve) one service against
    one process per camera."""
    if serve:
        if papers:
            raise AdedgeError("--serve and --papers both given", "run them one at a time")
        bench_serve(
            model, tiled_model, cameras, sources, seconds, warmup, threads, backend,
            max_batch, max_delay_ms, json_out,
        )  # fmt: skip
        return
    seconds = 2.0 if seconds is None else seconds
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
    if parse_backend(backend).remote is not None and model is not None:
        raise AdedgeError(
            "--model with a triton backend: bench times the server's model",
            "leave --model out (the card comes from the server)",
        )
    from adedge.bundle import load_bundle
    from adedge.runtime.bench import bench_bundle, render

    model = pick_model_for(model, backend)
    if model is not None:
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


def bench_serve(
    model: Path | None,
    tiled_model: Path | None,
    cameras: str,
    sources: str,
    seconds: float | None,
    warmup: float,
    threads: int,
    backend: str,
    max_batch: int | None,
    max_delay_ms: float | None,
    json_out: Path | None,
) -> None:
    """`adedge bench --serve`: see runtime/bench/serve.py."""
    import tempfile

    from adedge.runtime.bench.serve import (
        bench_model,
        bench_sources,
        check_settings,
        parse_cameras,
        parse_sources,
        render_markdown,
        run_serve_bench,
    )
    from adedge.runtime.bench.serve_runs import RunSettings

    counts = parse_cameras(cameras)
    kinds = parse_sources(sources)
    if parse_backend(backend).remote is not None:
        raise AdedgeError(
            "bench --serve measures engines on this machine, not a Triton server",
            "time a Triton model with `adedge bench --backend triton://...` (no --serve), "
            "or many cameras through it with benchmarks/triton_cameras.py",
        )
    settings = RunSettings(
        10.0 if seconds is None else seconds, warmup, threads, backend, max_batch, max_delay_ms
    )
    check_settings(settings)
    if json_out is not None:
        from adedge.outputs import check_writable

        check_writable(json_out, "--json")
    with tempfile.TemporaryDirectory(prefix="adedge-standin-") as scratch:
        if model is None and tiled_model is None:
            from adedge.runtime.bench.serve_models import write_standin_bundles

            standins = write_standin_bundles(Path(scratch))
            paths = [standins.whole, standins.tiled]
        else:
            paths = [path for path in (model, tiled_model) if path is not None]
        models = [bench_model(path) for path in paths]
        found, notes = bench_sources(kinds)
        for note in notes:
            say(f"note: {note}")
        if not found:
            raise AdedgeError("no source kind to measure here", "pass --sources texture")
        report = run_serve_bench(models, found, counts, settings, say, notes)
    typer.echo(render_markdown(report))
    if json_out:
        from adedge.atomic import write_json

        write_json(json_out, report.to_dict())
        say(f"wrote {json_out}")
