"""``rollout.sh`` for real, end to end, against the real pieces: a tritonserver
(nvidia-pytriton's, whose repository runs the graphs in its Python backend because the wheel has
no ``onnxruntime_onnx``: so the test adds the version itself, as ``adedge triton-repo`` does,
and calls the script with ``--added``) and an ``adedge serve`` process whose model is
edge-triton.yaml's (a Triton model with ``fallback: local``), its API on 127.0.0.1 with an
admin token. The script waits for the new version on the server, then loads the bundle on the
box over HTTP (``--edge-bundle``: the bundle is already on the box, no ssh/rsync)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "deploy" / "fleet"
ADMIN = "rollout-admin-token-0123456789abcdef"
WAIT_S = 60.0  # a bound for starts and polls, never a measured time


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT_S:.0f}s: {what}"
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def serve_process(tmp: Path, data: dict) -> Iterator[subprocess.Popen]:
    """``adedge serve --config`` in its own process; stopped with SIGTERM (its log shown
    when the test fails)."""
    config = tmp / "serve.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    log = tmp / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "adedge", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(log.read_text(errors="replace")[-4000:])


def add_version(repository: Path, bundle: Path, version: int, scratch: Path) -> str:
    """``bundle`` as ``version`` of ``line_<stage>``, in the order ``adedge triton-repo``
    writes it: the whole version folder moved in, then the config with the new card."""
    from triton_python_repo import write_python_repository

    from adedge.export.triton_repo import RepoOptions

    options = RepoOptions(name="line", instance_kind="cpu")
    (model,) = write_python_repository([bundle], scratch, options, version)
    if version == 1:
        os.rename(scratch / model, repository / model)
    else:
        os.rename(scratch / model / str(version), repository / model / str(version))
        os.replace(scratch / model / "config.pbtxt", repository / model / "config.pbtxt")
    return model


def rollout(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(FLEET / "rollout.sh"), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "ADEDGE_ADMIN_TOKEN": ADMIN},
        timeout=120,
    )


def test_rollout_waits_for_triton_then_loads_the_fallback_on_the_box(
    tmp_path, mean_bundle, digit_folder
):
    from bundles import max_score_bundle
    from triton_server import free_ports, pytriton_missing, start_server

    from adedge.bundle import load_bundle
    from adedge.runtime.serve.model_watch import card_digest

    missing = pytriton_missing()
    if missing:
        pytest.skip(missing)
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (rollout.sh's HTTP client)")
    old = shutil.copytree(mean_bundle, tmp_path / "bundles" / "line-v1")
    new = max_score_bundle(tmp_path / "bundles" / "line-v2")
    repository = tmp_path / "repo"
    repository.mkdir()
    model = add_version(repository, old, 1, tmp_path / "v1")
    server = start_server(repository, tmp_path)
    try:
        (port,) = free_ports(1)
        (tmp_path / "admin.token").write_text(ADMIN + "\n", encoding="utf-8")
        shipped = yaml.safe_load((FLEET / "edge-triton.yaml").read_text(encoding="utf-8"))
        line = shipped["models"]["line"]  # the shipped model section, on this server
        line.update(backend=server.address(model, "http"), bundle=str(old), max_delay_ms=2)
        data = {
            "node": {"id": "line-a"},
            "models": {"line": line},
            "cameras": {"cam": {"source": str(digit_folder), "model": "line", "loop": True,
                                "fps": 10}},
            "api": {"host": "127.0.0.1", "port": port, "tokens": [
                {"name": "rollout", "scope": "admin", "file": str(tmp_path / "admin.token")}]},
            "storage": {"path": str(tmp_path / "store")},
        }  # fmt: skip
        box = f"http://127.0.0.1:{port}"
        edge = ("--edge", "127.0.0.1", "--edge-url", "http://{host}:" + str(port))
        with serve_process(tmp_path, data):
            wait_for(lambda: answers(f"{box}/api/health/ready"), "the box ready")
            add_version(repository, new, 2, tmp_path / "v2")
            done = rollout(
                "--added", f"{model}:2", "--triton", f"127.0.0.1:{server.http_port}",
                "--timeout", "60", *edge, "--edge-bundle", new, "--edge-model", "line", new,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            assert f"{model} version 2 is ready on 127.0.0.1:{server.http_port}" in done.stdout
            assert f"127.0.0.1: line loaded {new}\n" in done.stdout
            assert ADMIN not in done.stdout + done.stderr
            auth = {"Authorization": f"Bearer {ADMIN}"}
            (info,) = httpx.get(f"{box}/api/models", headers=auth, timeout=10).json()
            assert info["bundle"] == server.address(model, "http") and info["generation"] == 2
            assert info["sha256"] == card_digest(load_bundle(new).card.to_dict())
            settings = json.loads((tmp_path / "store" / "settings.json").read_text())
            assert settings["models"]["line"]["bundle"] == str(new)  # kept across restarts
            # the old bundle is not the model the server now serves: refused, nothing changes
            refused = rollout("--added", f"{model}:2", *edge, "--edge-bundle", old,
                              "--edge-model", "line", old)  # fmt: skip
            assert refused.returncode != 0
            assert "answered 409" in refused.stderr and "is not the model" in refused.stderr
            (info,) = httpx.get(f"{box}/api/models", headers=auth, timeout=10).json()
            assert info["generation"] == 2
    finally:
        server.stop()
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert "model line: swapped to" in log
    assert "was refused" not in log  # edge-triton.yaml has no watch to race the load
