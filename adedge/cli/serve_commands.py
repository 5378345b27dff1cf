"""`adedge serve`: the multi-camera inspection service (no torch needed).

The config file is the service; the quick form (``--source URI --model DIR``) builds a
one-camera config from the options, for a first try.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from adedge.cli.app import BACKEND_HELP, Command, app, pick_model_for, say
from adedge.errors import AdedgeError
from adedge.triton_address import is_triton

if TYPE_CHECKING:
    from adedge.runtime.serve.config import ServeConfig

SERVE_EXTRA_HINT = "install the service's packages: pip install 'adedge[serve]'"


def _require_serve_packages() -> None:
    """One line naming what is missing, before anything starts."""
    import importlib.util

    missing = [
        name
        for name in ("pydantic", "yaml", "paho.mqtt", "fastapi", "uvicorn", "prometheus_client")
        if importlib.util.find_spec(name.split(".")[0]) is None
    ]
    if missing:
        raise AdedgeError(f"adedge serve needs {', '.join(missing)}", SERVE_EXTRA_HINT)


def quick_config(
    source: str,
    model: Path | None,
    backend: str,
    threshold: float | None,
    storage: Path,
    port: int,
    host: str,
) -> ServeConfig:
    """A one-camera config from ``--source``/``--model``: what the file form would say."""
    from adedge.runtime.serve.config import parse_config

    bundle = pick_model_for(model, backend)
    entry: dict[str, str] = {"backend": backend}
    if bundle is not None:
        entry["bundle"] = str(bundle)
        if is_triton(backend):
            entry["fallback"] = "local"
    data = {
        "models": {"model": entry},
        "cameras": {"camera": {"source": source, "model": "model", "threshold": threshold}},
        "api": {"host": host, "port": port},
        "storage": {"path": str(storage)},
    }
    return parse_config(data)


@app.command("serve", cls=Command)
def serve(
    config: Annotated[
        Path | None,
        typer.Option(
            help="The service's YAML config (node, models, cameras, mqtt, webhooks, api, "
            "storage; ${ENV} for secrets). See --print-schema."
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(help="Quick form without a config: one camera from this source URI."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Quick form: the bundle folder (default: newest); with a triton backend "
            "optional, its local fallback (fallback: local)."
        ),
    ] = None,
    backend: Annotated[str, typer.Option(help="Quick form: " + BACKEND_HELP)] = "onnxruntime",
    threshold: Annotated[
        float | None, typer.Option(help="Quick form: override the card's threshold.")
    ] = None,
    storage: Annotated[
        Path, typer.Option(help="Quick form: folder of the event store and its media.")
    ] = Path("adedge-data"),
    port: Annotated[int, typer.Option(help="Quick form: HTTP port (0: any free one).")] = 5080,
    host: Annotated[
        str, typer.Option(help="Quick form: HTTP address; 127.0.0.1 keeps it on this box.")
    ] = "127.0.0.1",
    check: Annotated[
        bool, typer.Option("--check", help="Validate the config and exit (starts nothing).")
    ] = False,
    print_schema: Annotated[
        bool, typer.Option("--print-schema", help="Print the config's JSON schema and exit.")
    ] = False,
) -> None:
    """Run the inspection service: many cameras, one shared engine per model, events with
    evidence in SQLite, MQTT and webhooks, health and Prometheus metrics over HTTP, and a
    web console at http://HOST:PORT/ (live views, event review, thresholds, model swaps;
    the API is documented at /docs).

    Runs until SIGTERM or Ctrl-C. Open events then end as 'shutdown', clips are finished.
    SIGHUP re-reads the config file (as POST /api/config/reload does).

    Exits 143 after SIGTERM (systemd: SuccessExitStatus=143), 130 after Ctrl-C.

    A bad config is one line naming its key and exit 2, before anything starts.
    """
    _require_serve_packages()
    from adedge.runtime.serve.config import load_config, redacted, schema_json

    if print_schema:
        typer.echo(schema_json())
        return
    if config is not None and source is not None:
        raise AdedgeError(
            "--config and --source both given", "use the config file, or the quick form alone"
        )
    if config is None and source is None:
        raise AdedgeError(
            "nothing to serve", "pass --config adedge.yaml, or --source URI --model DIR"
        )
    if config is not None:
        settings = load_config(config)
    else:
        assert source is not None
        settings = quick_config(source, model, backend, threshold, storage, port, host)
    if check:
        _check_bundles(settings)
        _check_api(settings)
        cameras = ", ".join(settings.cameras)
        say(
            f"config OK: node {settings.node.id}, {len(settings.models)} model(s), "
            f"cameras {cameras}"
        )
        if config is None:
            import json

            typer.echo(json.dumps(redacted(settings), indent=2))
        return
    _run(settings, config)  # a model that fails to load errors its cameras; the others run


def _check_bundles(settings: ServeConfig) -> None:
    """Each model's bundle folder has a readable card (one line naming the model if not);
    a model that fails later, at load, only errors its cameras."""
    from adedge.bundle import load_bundle

    for name, model in settings.models.items():
        if model.bundle is None:  # a Triton model without a fallback: the server has the card
            continue
        try:
            load_bundle(model.bundle)
        except AdedgeError as error:
            raise AdedgeError(f"models.{name}.bundle: {error.message}", error.hint) from None


def _check_api(settings: ServeConfig) -> None:
    """The API's token files and TLS certificate, as the start would check them."""
    if settings.api.enabled:
        from adedge.runtime.serve.http_api import check_tls
        from adedge.runtime.serve.tokens import load_tokens

        load_tokens(settings.api)
        check_tls(settings.api)


def _run(settings: ServeConfig, config_path: Path | None) -> None:
    import signal
    import threading

    from adedge.runtime.serve.service import Service

    service = Service(settings, say, config_path=config_path)

    def reload(signum: int, frame: object) -> None:  # SIGHUP: re-read the config file
        threading.Thread(target=_reload, args=(service,), daemon=True).start()

    if config_path is not None and hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, reload)
    try:
        service.start()
        while not service.wait(1.0):
            pass
    finally:
        say("stopping: open events end, clips finish, the outbox flushes")
        service.stop()


def _reload(service: object) -> None:
    from adedge.runtime.serve.api_types import Refused

    try:
        service.reload_config()  # type: ignore[attr-defined]
    except Refused as error:
        say(f"config reload refused, the running config goes on: {error.one_line()}")
