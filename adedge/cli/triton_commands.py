"""`adedge triton-repo`: a Triton Inference Server model repository from bundles (the
export stage's :mod:`adedge.export.triton_repo`, imported inside the command; it needs onnx,
not torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adedge.cli.app import Command, app
from adedge.errors import AdedgeError


def _sizes(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise AdedgeError(
            f"--preferred '{text}' is not a list of sizes", "e.g. --preferred 4,8"
        ) from None


@app.command("triton-repo", cls=Command)
def triton_repo(
    bundles: Annotated[list[Path], typer.Argument(help="Bundle folders (adedge export --out).")],
    out: Annotated[Path, typer.Option(help="The model repository (created or extended).")],
    name: Annotated[
        str | None, typer.Option(help="Model name prefix (default: the bundle folder's name).")
    ] = None,
    max_batch: Annotated[
        int | None,
        typer.Option(help="max_batch_size (default: a tiled stage's tiles per frame, else 8)."),
    ] = None,
    preferred: Annotated[
        str | None, typer.Option(help="Preferred batch sizes, e.g. 4,8 (default: tiles, max).")
    ] = None,
    queue_delay_us: Annotated[
        int, typer.Option(help="Dynamic batching's max queue delay in microseconds.")
    ] = 1000,
    instance_kind: Annotated[str, typer.Option(help="gpu or cpu.")] = "gpu",
    instances: Annotated[int, typer.Option(help="Model instances per server.")] = 1,
    target: Annotated[
        str | None,
        typer.Option(help="Ship this GPU's TensorRT engine from engines/ as model.plan (sm87)."),
    ] = None,
    triton_python: Annotated[
        str | None,
        typer.Option(
            help="A python with tritonclient[grpc] for the schema check "
            "(default: $ADEDGE_TRITON_PYTHON, else this one)."
        ),
    ] = None,
) -> None:
    """Write one Triton model per bundle stage: config.pbtxt (the adedge card in its
    parameters) and a new version folder with model.onnx (and model.plan with --target).
    Exporting again adds a version and never rewrites one."""
    from adedge.export.triton_repo import RepoOptions, write_repository

    options = RepoOptions(
        name=name, max_batch=max_batch, preferred=_sizes(preferred),
        queue_delay_us=queue_delay_us, instance_kind=instance_kind, instances=instances,
        target=target,
    )  # fmt: skip
    schema, written = write_repository(bundles, out, options, triton_python)
    for item in written:
        typer.echo(f"{item.model}: version {item.version} ({item.platform}) in {item.folder}")
    typer.echo(f"configs checked against Triton's schema ({schema}) and the graphs")
