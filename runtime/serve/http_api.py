"""The service's HTTP API: health, stats and Prometheus metrics (FastAPI, served by uvicorn
in a thread of the service process), and the web console's routers beside them.

Who may ask what is decided once, for the whole app, by :class:`~.auth.AuthMiddleware`
(installed by :func:`build_app`): reads need a ``viewer`` token, writes an ``admin`` one,
health and the page's files are open, and without tokens only this machine is served. The
server binds 127.0.0.1 unless ``api.host`` says otherwise and speaks HTTPS with ``api.tls``.

The app grows by routers: each job is an :class:`~fastapi.APIRouter` that reads the service
through the :func:`service_view` and :func:`service_metrics` dependencies, so a new one
(``/api/events``, ``/api/cameras``) is passed to :func:`build_app` without touching these.
The endpoints are plain ``def``: FastAPI runs them in its thread pool, so a view that takes
a lock or reads the disk never stalls the event loop. OpenAPI is at ``/docs``.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from adedge import __version__
from adedge.errors import AdedgeError
from adedge.runtime.serve.api_types import ConsoleView, NotFound, Refused
from adedge.runtime.serve.auth import AuthMiddleware
from adedge.runtime.serve.config import ApiConfig
from adedge.runtime.serve.metrics import ServiceMetrics
from adedge.runtime.serve.stats import ServiceView
from adedge.runtime.serve.tokens import TokenTable, load_tokens

Log = Callable[[str], None]  # one line for a person, as everywhere in the service
STARTUP_TIMEOUT_S = 20.0
GRACEFUL_SHUTDOWN_S = 3  # open connections (a slow scrape) get this long to finish
LISTEN_BACKLOG = 64


def service_view(request: Request) -> ServiceView:
    """The running service, as the routers see it."""
    return request.app.state.view


def service_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


def console_view(request: Request) -> ConsoleView:
    """The running service with its console methods (the routers of the web console)."""
    return request.app.state.view


def _not_found(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": _one_line(error)}, 404)


def _refused(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": _one_line(error)}, 409)


def _one_line(error: Exception) -> str:
    return error.one_line() if isinstance(error, AdedgeError) else str(error)


class Health(BaseModel):
    status: str


class NotReady(Health):
    reasons: list[str]


health_router = APIRouter(prefix="/api/health", tags=["health"])


@health_router.get("/live", response_model=Health)
def live() -> Health:
    """The process answers (a liveness probe: restart the service if this fails)."""
    return Health(status="live")


@health_router.get(
    "/ready", response_model=Health, responses={503: {"model": NotReady, "description": "why not"}}
)
def ready(view: ServiceView = Depends(service_view)) -> Any:
    """Every enabled camera has produced a frame and every model is loaded; else 503 with
    the reasons (a readiness probe: hold traffic and alerts until this is 200)."""
    reasons = view.not_ready()
    if reasons:
        return JSONResponse(NotReady(status="not ready", reasons=reasons).model_dump(), 503)
    return Health(status="ready")


stats_router = APIRouter(prefix="/api", tags=["stats"])


@stats_router.get("/stats")
def stats(view: ServiceView = Depends(service_view)) -> dict[str, Any]:
    """The node, its version and uptime, and each camera's, model's and storage's state."""
    return {
        "node": view.node,
        "version": __version__,
        "uptime_s": round(max(0.0, time.time() - view.started), 3),
        "cameras": [camera.to_dict() for camera in view.camera_stats()],
        "models": [model.to_dict() for model in view.model_stats()],
        "storage": view.storage_stats().to_dict(),
    }


metrics_router = APIRouter(tags=["metrics"])


@metrics_router.get("/metrics", response_class=Response)
def metrics(
    request: Request,
    view: ServiceView = Depends(service_view),
    service: ServiceMetrics = Depends(service_metrics),
) -> Response:
    """Prometheus text format; the storage gauges are read from the disk at each scrape."""
    try:
        storage = view.storage_stats()
    except OSError as exc:  # a failing disk must not blind the rest of the monitoring
        request.app.state.log(f"metrics: storage stats unreadable: {exc}")
    else:
        service.storage(storage.media_bytes, storage.free_bytes, storage.outbox)
    return Response(service.exposition(), media_type=CONTENT_TYPE_LATEST)


def _logger_line(line: str) -> None:
    logging.getLogger("adedge.serve.api").warning(line)


def build_app(
    view: ServiceView,
    metrics: ServiceMetrics,
    routers: Sequence[APIRouter] = (),
    log: Log | None = None,
    tokens: TokenTable | None = None,
) -> FastAPI:
    """The HTTP app over a running service; ``routers`` add endpoints beside these.

    ``tokens`` are the API's tokens (:func:`~.auth.load_tokens`, called by the service
    before it starts anything); None reads them from ``view.config.api`` here, or serves
    this machine only when the view has no config."""
    app = FastAPI(
        title="adedge serve",
        version=__version__,
        description="Health, stats and Prometheus metrics of an adedge inspection service.",
    )
    app.state.view = view
    app.state.metrics = metrics
    app.state.log = log or _logger_line
    if tokens is None:
        config = getattr(view, "config", None)
        tokens = TokenTable() if config is None else load_tokens(config.api)
    app.state.tokens = tokens
    app.add_middleware(AuthMiddleware, tokens=tokens, log=app.state.log)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Refused, _refused)
    for router in (health_router, stats_router, metrics_router, *routers):
        app.include_router(router)
    return app


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), or a one-line AdedgeError.

    The server binds here rather than inside uvicorn, which logs a bind failure and exits
    its thread: binding first gives the caller the reason and the port actually bound."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        raise AdedgeError(
            f"api.host {host} is not a known host or address",
            "use 127.0.0.1 (this machine only), 0.0.0.0 (every interface) or this machine's IP",
        ) from None
    listener = socket.socket(family, kind, proto)
    try:
        if sys.platform != "win32":  # on Windows SO_REUSEADDR lets two servers share a port
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(LISTEN_BACKLOG)
    except OSError as exc:
        listener.close()
        raise _bind_error(host, port, exc) from None
    return listener


def _bind_error(host: str, port: int, exc: OSError) -> AdedgeError:
    if exc.errno == errno.EADDRINUSE:
        return AdedgeError(
            f"api.port {port} is in use", "choose another port or stop what holds it"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return AdedgeError(
            f"api.host {host} is not an address of this machine",
            "use 127.0.0.1, 0.0.0.0 (every interface) or one of this machine's addresses",
        )
    if exc.errno == errno.EACCES:
        return AdedgeError(f"api.port {port} needs privileges to bind", "choose a port above 1023")
    return AdedgeError(
        f"api cannot listen on {host}:{port} ({exc.strerror or exc})",
        "check api.host and api.port",
    )


def check_tls(api: ApiConfig) -> None:
    """``api.tls``'s certificate and key load together, or a one-line AdedgeError."""
    if api.tls is None:
        return
    for key, path in (("api.tls.cert", api.tls.cert), ("api.tls.key", api.tls.key)):
        if not Path(path).is_file():
            raise AdedgeError(
                f"{key}: '{path}' is not a file", "give the path of a PEM file (or remove api.tls)"
            )
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            str(api.tls.cert), str(api.tls.key)
        )
    except (ssl.SSLError, OSError) as error:
        raise AdedgeError(
            f"api.tls: certificate '{api.tls.cert}' and key '{api.tls.key}' do not load together "
            f"({getattr(error, 'reason', None) or error})",
            "give a PEM certificate and its own unencrypted private key",
        ) from None


class ApiServer:
    """uvicorn serving ``app`` from a daemon thread of the service.

    ``port`` is the port bound once :meth:`start` returns (``api.port: 0`` picks a free
    one). With ``api.tls`` it speaks HTTPS (checked before binding: a bad certificate is
    one line). :meth:`stop` lets open requests finish for a few seconds, then closes."""

    def __init__(self, app: FastAPI, config: ApiConfig, log: Log) -> None:
        self.app = app
        self.config = config
        self.log = log
        self.port = config.port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def start(self) -> None:
        """Bind, serve, and return once uvicorn accepts connections."""
        if self._thread is not None:
            raise RuntimeError("ApiServer.start called twice")
        check_tls(self.config)
        listener = bind_listener(self.config.host, self.config.port)
        self.port = listener.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host=self.config.host,
                port=self.port,
                log_config=None,  # the service configures logging; uvicorn's loggers propagate
                log_level="warning",
                access_log=False,  # a scrape every 15 s would fill the log
                proxy_headers=False,  # the client is the socket's peer: X-Forwarded-For is
                # not trusted, so it cannot dodge the auth rate limit (see auth.py)
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                **self._tls_options(),
            )
        )
        self._server = server
        self._thread = threading.Thread(
            target=self._serve, args=(server, listener), name="adedge-api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the HTTP server did not start: {self._failure!r}")
            time.sleep(0.01)
        self.log(f"api: {self.scheme}://{self._url_host()}:{self.port} (docs at /docs)")

    def _serve(self, server: uvicorn.Server, listener: socket.socket) -> None:
        try:
            server.run(sockets=[listener])
        except BaseException as exc:  # SystemExit included: uvicorn exits on a failed startup
            self._failure = exc
            self.log(f"api: the HTTP server stopped: {exc!r}")
        finally:
            listener.close()

    def _tls_options(self) -> dict[str, Any]:
        tls = self.config.tls
        if tls is None:
            return {}
        return {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)}

    @property
    def scheme(self) -> str:
        return "http" if self.config.tls is None else "https"

    @property
    def api_url(self) -> str:
        """Where this machine reaches the server (``0.0.0.0``/``::`` as the loopback
        address), e.g. ``https://127.0.0.1:5080``; the port is the bound one after start."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
            self.config.host, self.config.host
        )
        return f"{self.scheme}://{_bracketed(host)}:{self.port}"

    def _url_host(self) -> str:
        return _bracketed(self.config.host)

    def stop(self) -> None:
        """Stop serving and wait for the thread; the port is free when this returns."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(GRACEFUL_SHUTDOWN_S + 5.0)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5.0)
        if thread.is_alive():
            self.log("api: the HTTP server thread did not stop")


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
