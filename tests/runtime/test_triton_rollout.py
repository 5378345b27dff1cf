"""Rolling a new model version out to a service whose model runs on Triton: the version
is added to the server's repository (config.pbtxt with the new card, version folder N+1)
while a camera scores, and

* with ``watch: true`` the service sees the server's new card and swaps it in (checked as
  any swap), so thresholds and heatmaps follow the graphs the server now runs;
* with ``fallback: local`` an API load of the new bundle gives the model its new fallback
  and card; a bundle that is not the server's model is refused and changes nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from bundles import max_score_bundle
from triton_python_repo import write_python_repository

from adedge.bundle import load_bundle
from adedge.export.triton_repo import RepoOptions

pytestmark = pytest.mark.runtime
WAIT_S = 60.0  # a bound for the server's poll and the service's watch, never a measured time


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT_S:.0f}s: {what}"
        time.sleep(0.1)


def roll(server, bundle: Path, name: str, version: int, scratch: Path) -> str:
    """Add ``bundle`` as ``version`` of model ``<name>_<stage>`` to the running server's
    repository, as `adedge triton-repo` does (whole folders moved in, so the poll never sees
    half a version), and wait until the server has it ready."""
    options = RepoOptions(name=name, instance_kind="cpu")
    (model,) = write_python_repository([bundle], scratch / f"v{version}", options, version)
    written, served = scratch / f"v{version}" / model, server.repository / model
    if version == 1:
        os.rename(written, served)
    else:
        os.rename(written / str(version), served / str(version))
        os.replace(written / "config.pbtxt", served / "config.pbtxt")
    ready = f"{server.http_url}/v2/models/{model}/versions/{version}/ready"
    wait_for(lambda: httpx.get(ready).status_code == 200, f"{model} v{version} ready")
    return model


def service_on(tmp_path: Path, folder: Path, model: dict):
    from adedge.runtime.serve.config import parse_config
    from adedge.runtime.serve.service import Service

    config = parse_config(
        {
            "models": {"line": {"max_delay_ms": 2, **model}},
            "cameras": {"cam": {"source": str(folder), "model": "line", "loop": True, "fps": 20}},
            "api": {"enabled": False},
            "storage": {"path": str(tmp_path / "store")},
        }
    )
    lines: list[str] = []
    service = Service(config, lines.append)
    service.log_lines = lines
    return service


def scored(service) -> int:
    return service.cameras["cam"].frames_scored


def test_watch_swaps_in_the_new_card_the_server_carries(
    triton, mean_bundle, digit_folder, tmp_path
) -> None:
    server, _, _ = triton
    model = roll(server, mean_bundle, "watched", 1, tmp_path)
    service = service_on(tmp_path, digit_folder, {"backend": server.address(model, "grpc"),
                                                   "watch": True})  # fmt: skip
    service.start()
    try:
        engine = service.models.engines["line"]
        wait_for(lambda: scored(service) >= 3, "frames scored through version 1")
        assert engine.generation == 1
        version2 = max_score_bundle(tmp_path / "max")
        roll(server, version2, "watched", 2, tmp_path)
        wanted = load_bundle(version2).card.to_dict()
        wait_for(lambda: engine.detector.card.to_dict() == wanted, "the new card swapped in")
        assert engine.generation == 2
        assert any("carries a new card" in line for line in service.log_lines)
        after = scored(service)
        wait_for(lambda: scored(service) >= after + 3, "frames scored after the swap")
    finally:
        service.stop()


def test_api_load_gives_a_triton_model_its_new_fallback(
    triton, mean_bundle, digit_folder, tmp_path
) -> None:
    from adedge.runtime.serve.api_types import Refused

    server, _, _ = triton
    model = roll(server, mean_bundle, "fallback", 1, tmp_path)
    address = server.address(model, "grpc")
    service = service_on(
        tmp_path,
        digit_folder,
        {"backend": address, "bundle": str(mean_bundle), "fallback": "local"},
    )
    service.start()
    try:
        engine = service.models.engines["line"]
        wait_for(lambda: scored(service) >= 3, "frames scored through version 1")
        version2 = max_score_bundle(tmp_path / "max")
        roll(server, version2, "fallback", 2, tmp_path)
        with pytest.raises(Refused, match="is not the model"):  # the old bundle: refused
            service.models.swap("line", mean_bundle)
        assert engine.generation == 1
        report = service.models.swap("line", version2)
        assert report.generation == 2 and report.new_bundle == address
        assert engine.detector.card.to_dict() == load_bundle(version2).card.to_dict()
        fallback = engine.detector.stages[0].backend.fallback
        assert fallback is not None  # the new bundle runs here while the server is away
        # remembered: a restart of the service keeps the loaded fallback
        remembered = service.models.settings.model_bundle("line", mean_bundle)
        assert remembered == version2.absolute()
        after = scored(service)
        wait_for(lambda: scored(service) >= after + 3, "frames scored after the load")
    finally:
        service.stop()
