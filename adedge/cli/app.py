"""The `adedge` command line's application: the typer app and its command classes, what
every command shares (``say``, ``pick_model``, the --data and --backend help), the --version
option, and :func:`main`, which turns errors, Ctrl-C and SIGTERM into one line and an exit
code. The commands register themselves on :data:`app` from the sibling modules, which
``adedge.cli`` imports."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from adedge import __version__
from adedge.errors import AdedgeError, Interrupted, Terminated, interrupt_exit_code
from adedge.formats import backend_help
from adedge.paths import MODELS_DIR, resolve_model
from adedge.triton_address import is_triton


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


def pick_model(model: Path | None) -> Path:
    return resolve_model(model, say)


MODEL_HELP = (
    f"Bundle folder (default: newest in {MODELS_DIR}/). With a triton backend it is "
    "optional (the card comes from the server) and, when given, runs locally while the "
    "server is unreachable: it must be the bundle exported to the Triton repository."
)


def pick_model_for(model: Path | None, backend: str) -> Path | None:
    """``--model`` for ``--backend``: the bundle (default: the newest), or with a Triton
    model the optional local fallback (None: none)."""
    return model if is_triton(backend) else pick_model(model)


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
