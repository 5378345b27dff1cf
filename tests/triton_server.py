"""A real Triton Inference Server on 127.0.0.1 for tests: the ``tritonserver`` binary that the
PyPI wheel ``nvidia-pytriton`` carries, started standalone from ``.venv-pytriton``
(``make pytriton-venv``) on free ports.

What the wheel needs, found in it (pytriton/triton.py does the same before its own start):
the binary is ``pytriton/tritonserver/bin/tritonserver``; its shared libraries are in
``nvidia_pytriton.libs`` (``LD_LIBRARY_PATH``); the Python backend's folder
(``backends/python``) lacks its stub, which is shipped per Python version under
``python_backend_stubs/<major.minor>/`` and must be copied next to ``libtriton_python.so``;
the stub embeds the system's libpython, so the venv's packages (numpy<2, onnxruntime) reach
a ``model.py`` through ``PYTHONPATH``. Only the Python backend is in the wheel (no
``onnxruntime_onnx``/``tensorrt_plan``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[1]
PYTRITON_VENV = ROOT / ".venv-pytriton"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 8.0


def _site_packages(venv: Path) -> Path | None:
    found = sorted(venv.glob("lib/python3.*/site-packages"))
    return found[0] if found else None


def pytriton_missing(venv: Path = PYTRITON_VENV) -> str | None:
    """Why the server cannot start here (None: it can)."""
    site = _site_packages(venv)
    if site is None or not (site / "pytriton/tritonserver/bin/tritonserver").is_file():
        return f"{venv.name} with nvidia-pytriton is absent (make pytriton-venv)"
    return None


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class TritonServer:
    """A running ``tritonserver``; ``log`` is its stdout+stderr file."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    metrics_port: int
    log: Path
    repository: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def address(self, model: str, via: str = "http") -> str:
        """``--backend`` for ``model``: gRPC (``triton://``) or KServe v2 REST."""
        if via == "grpc":
            return f"triton://127.0.0.1:{self.grpc_port}/{model}"
        return f"triton+{self.http_url}/{model}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def ready(self) -> bool:
        try:
            with urlopen(f"{self.http_url}/v2/health/ready", timeout=1) as response:
                return response.status == 200
        except (URLError, OSError):
            return False

    def metrics(self) -> str:
        with urlopen(self.metrics_url, timeout=5) as response:
            return response.read().decode()

    def kill(self) -> None:
        """As a crash: no unloading, connections cut; its Python-backend stubs (children in
        its process group) go too, as they would with a container."""
        self.process.kill()
        self.process.wait()
        self._kill_group()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.process.poll() is None:
            # Triton unloads its models, then exits; it may linger on clients' keep-alive
            # connections: the models are gone after a few seconds, so it is killed then
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._kill_group()  # stubs left behind by a server that did not unload them


def prepare_server_dir(scratch: Path, venv: Path = PYTRITON_VENV) -> Path:
    """A copy of the wheel's ``tritonserver`` folder with the Python backend's stub for the
    venv's Python in ``backends/python`` (the wheel keeps stubs apart, one per version)."""
    site = _site_packages(venv)
    assert site is not None
    source = site / "pytriton" / "tritonserver"
    target = scratch / "tritonserver"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("python_backend_stubs"))
    version = site.parent.name.removeprefix("python")
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    shutil.copy2(stub, target / "backends" / "python" / "triton_python_backend_stub")
    return target


def _libpython_dir(venv: Path) -> str | None:
    """The folder of the venv's own ``libpython3.X.so.1.0`` when its Python is a shared
    build (pyenv, a distribution's): the Python-backend stub links that library, which is
    in the system's library path only where the distribution's ``libpython3.X`` is installed."""
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _LIBPYTHON_PROBE],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return found or None


_LIBPYTHON_PROBE = (
    "import pathlib, sys, sysconfig; d = sysconfig.get_config_var('LIBDIR') or ''; "
    "v = f'{sys.version_info[0]}.{sys.version_info[1]}'; "
    "print(d if (pathlib.Path(d) / f'libpython{v}.so.1.0').exists() else '')"
)


def start_server(
    repository: Path,
    scratch: Path,
    venv: Path = PYTRITON_VENV,
    timeout: float = START_TIMEOUT_S,
    ports: tuple[int, int, int] | None = None,
) -> TritonServer:
    """Start ``tritonserver --model-repository repository`` on free ports (or ``ports``:
    HTTP, gRPC, metrics, to restart one); wait until ``/v2/health/ready`` answers 200 (every
    model loaded) or fail with its log."""
    server_dir = scratch / "tritonserver"
    if not server_dir.is_dir():
        server_dir = prepare_server_dir(scratch, venv)
    site = _site_packages(venv)
    http, grpc, metrics = ports or free_ports(3)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(
        p
        for p in (
            str(site / "nvidia_pytriton.libs"),
            _libpython_dir(venv),
            env.get("LD_LIBRARY_PATH"),
        )
        if p
    )
    env["PYTHONPATH"] = str(site)  # the stub embeds the system libpython: give it the venv
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    log = scratch / "tritonserver.log"
    if log.exists():
        log.rename(scratch / f"tritonserver.{time.time_ns()}.log")
    command = [
        str(server_dir / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={server_dir / 'backends'}",
        f"--cache-directory={server_dir / 'caches'}",
        "--http-address=127.0.0.1",
        f"--http-port={http}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        "--allow-cpu-metrics=false",
        "--metrics-interval-ms=100",
        "--model-control-mode=poll",
        "--repository-poll-secs=1",
        "--exit-on-error=true",
        "--log-verbose=0",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(  # its own process group: the stubs are killed with it
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = TritonServer(process, http, grpc, metrics, log, Path(repository))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tritonserver exited ({process.returncode}):\n{log.read_text()}")
        if server.ready():
            return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"tritonserver not ready after {timeout:.0f}s:\n{log.read_text()}")
