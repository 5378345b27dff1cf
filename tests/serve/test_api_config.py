"""``/api/version``, ``/api/config`` (secrets as ***), its schema and a refused reload: a real
Service started from a config file, its config router served by a real uvicorn on a free
port of 127.0.0.1 (no tokens configured: this machine is admin), asked with httpx.

The reload that applies a good file is the service's (tested with it); here a bad file is
refused with its key path and the running config keeps going.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from serve_scenes import camera, service_config, write_scene

from adedge import __version__
from adedge.runtime.serve import api_config
from adedge.runtime.serve.api_types import API_VERSION
from adedge.runtime.serve.config import ApiConfig, ServeConfig, load_config
from adedge.runtime.serve.http_api import ApiServer, build_app
from adedge.runtime.serve.service import Service

pytestmark = pytest.mark.runtime

MQTT_PASSWORD = "broker-pass-Zq81x"
HOOK_TOKEN = "Bearer hook-secret-77aa"
TIMEOUT = httpx.Timeout(20.0)


@contextlib.contextmanager
def serving_config(data: dict[str, Any], tmp: Path) -> Iterator[tuple[httpx.Client, Service]]:
    """The service started from ``tmp/adedge.yaml`` (written from ``data``), its config
    router served on a free port; an httpx client for it."""
    path = tmp / "adedge.yaml"
    path.write_text(yaml.safe_dump(data))
    lines: list[str] = []
    service = Service(load_config(path), lines.append, config_path=path)
    service.start()
    server = ApiServer(
        build_app(service, service.metrics, routers=[api_config.router], log=lines.append),
        ApiConfig(port=0),
        lines.append,
    )
    try:
        server.start()
        with httpx.Client(base_url=server.api_url, timeout=TIMEOUT) as client:
            yield client, service
    finally:
        server.stop()
        service.stop()


@pytest.fixture
def scene_config(tmp_path: Path, bundle: Path) -> dict[str, Any]:
    video = write_scene(tmp_path / "scene.avi", 20, range(0))
    return service_config(tmp_path, {"line1": camera(video, loop=True)}, bundle)


def test_version_names_adedge_the_api_and_the_node(
    tmp_path: Path, scene_config: dict[str, Any]
) -> None:
    with serving_config(scene_config, tmp_path) as (client, _):
        version = client.get("/api/version").json()
    assert version["adedge"] == __version__
    assert version["api"] == API_VERSION
    assert version["node"] == "line-test"
    assert version["numpy"] == np.__version__
    assert set(version) == {"adedge", "api", "node", "python", "onnxruntime", "numpy", "opencv"}


def test_the_config_hides_the_mqtt_password_and_webhook_headers(
    tmp_path: Path, scene_config: dict[str, Any], mosquitto_factory: Callable[..., Any]
) -> None:
    broker = mosquitto_factory(users={"adedge": MQTT_PASSWORD})
    scene_config["mqtt"] = {
        "host": broker.host,
        "port": broker.port,
        "username": "adedge",
        "password": MQTT_PASSWORD,
    }
    scene_config["webhooks"] = {
        "mes": {"url": "http://127.0.0.1:9/hook", "headers": {"Authorization": HOOK_TOKEN}}
    }
    with serving_config(scene_config, tmp_path) as (client, _):
        answer = client.get("/api/config")
    assert answer.status_code == 200
    config = answer.json()
    assert config["mqtt"]["password"] == "***"
    assert config["mqtt"]["username"] == "adedge"
    assert config["webhooks"]["mes"]["headers"] == {"Authorization": "***"}
    assert config["cameras"]["line1"]["alarm"] == {
        "k": 2,
        "n": 3,
        "cooldown_s": 0.2,
        "hysteresis": 0,
    }
    assert MQTT_PASSWORD not in answer.text and "hook-secret" not in answer.text


def test_the_schema_is_the_config_files(tmp_path: Path, scene_config: dict[str, Any]) -> None:
    with serving_config(scene_config, tmp_path) as (client, _):
        schema = client.get("/api/config/schema.json").json()
    assert schema == ServeConfig.model_json_schema()
    assert {"cameras", "models", "api"} <= set(schema["properties"])
    assert set(schema["$defs"]["TokenConfig"]["properties"]) == {"name", "scope", "file", "env"}


def test_a_bad_file_is_refused_with_its_key_path_and_the_running_config_stays(
    tmp_path: Path, scene_config: dict[str, Any]
) -> None:
    with serving_config(scene_config, tmp_path) as (client, service):
        bad = {**scene_config, "cameras": {"line1": {**scene_config["cameras"]["line1"]}}}
        bad["cameras"]["line1"]["alarm"] = {"k": 0, "n": 3}
        (tmp_path / "adedge.yaml").write_text(yaml.safe_dump(bad))
        refused = client.post("/api/config/reload")
        assert refused.status_code == 409
        assert refused.json()["detail"].startswith("cameras.line1.alarm.k: must be >= 1")

        (tmp_path / "adedge.yaml").write_text("cameras: [unclosed\n")
        refused = client.post("/api/config/reload")
        assert refused.status_code == 409
        assert "at line 2" in refused.json()["detail"]

        running = client.get("/api/config").json()
        assert running["cameras"]["line1"]["alarm"]["k"] == 2
        assert service.config.cameras["line1"].alarm.k == 2
        assert service.cameras["line1"].running


def test_a_service_started_without_a_file_refuses_a_reload(
    tmp_path: Path, scene_config: dict[str, Any]
) -> None:
    from adedge.runtime.serve.config import parse_config

    service = Service(parse_config(scene_config), print)
    service.start()
    server = ApiServer(
        build_app(service, service.metrics, routers=[api_config.router]), ApiConfig(port=0), print
    )
    try:
        server.start()
        refused = httpx.post(f"{server.api_url}/api/config/reload", timeout=TIMEOUT)
        who = httpx.get(f"{server.api_url}/api/auth/whoami", timeout=TIMEOUT).json()
    finally:
        server.stop()
        service.stop()
    assert refused.status_code == 409
    assert "started without a config file" in refused.json()["detail"]
    assert who == {"scope": "admin", "name": "loopback", "via": "loopback"}
