"""The HTTP API served by a real uvicorn on 127.0.0.1 (a free port), asked with httpx.

The service is a plain object satisfying the ServiceView protocol: this layer is tested
against the protocol; the real service's answers are tested with the service.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import APIRouter, Depends
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from adedge import __version__
from adedge.errors import AdedgeError
from adedge.runtime.serve.config import ApiConfig
from adedge.runtime.serve.http_api import ApiServer, build_app, service_view
from adedge.runtime.serve.metrics import ServiceMetrics
from adedge.runtime.serve.stats import (
    CameraState,
    CameraStats,
    DropReason,
    ModelState,
    ModelStats,
    StorageStats,
)

pytestmark = pytest.mark.runtime

LINES: list[str] = []
LOG = LINES.append  # the service logs one line per message


@dataclass
class FakeView:
    """What the service would answer; tests change ``reasons`` and ``storage`` freely."""

    node: str = "bench-7"
    started: float = field(default_factory=lambda: time.time() - 42.0)
    reasons: list[str] = field(default_factory=lambda: ["camera line1: no frame yet"])
    storage: StorageStats = field(
        default_factory=lambda: StorageStats("/var/lib/adedge", 12_345, 10**9, 5 * 10**9, 3, {})
    )
    storage_error: OSError | None = None

    def camera_stats(self) -> list[CameraStats]:
        return [
            CameraStats(
                "line1",
                "bottle",
                CameraState.ONLINE,
                detect=True,
                threshold=0.5,
                frames_read=10,
                drops={DropReason.STALE: 2},
            )
        ]

    def model_stats(self) -> list[ModelStats]:
        return [
            ModelStats("bottle", "models/bottle", None, "onnxruntime", ModelState.READY, ["line1"])
        ]

    def storage_stats(self) -> StorageStats:
        if self.storage_error is not None:
            raise self.storage_error
        return self.storage

    def not_ready(self) -> list[str]:
        return list(self.reasons)


@pytest.fixture
def view() -> FakeView:
    return FakeView()


@pytest.fixture
def metrics() -> ServiceMetrics:
    service = ServiceMetrics()
    service.camera_added("line1", "bottle", threshold=0.5)
    return service


@pytest.fixture
def server(view: FakeView, metrics: ServiceMetrics) -> Iterator[ApiServer]:
    api = ApiServer(build_app(view, metrics), ApiConfig(port=0), LOG)
    api.start()
    yield api
    api.stop()


@pytest.fixture
def client(server: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=20.0) as http:
        yield http


def test_live_and_ready_until_the_view_says_ready(client: httpx.Client, view: FakeView) -> None:
    assert client.get("/api/health/live").json() == {"status": "live"}
    waiting = client.get("/api/health/ready")
    assert waiting.status_code == 503
    assert waiting.json() == {"status": "not ready", "reasons": ["camera line1: no frame yet"]}
    view.reasons.clear()
    ready = client.get("/api/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_stats_reports_node_version_uptime_cameras_models_storage(client: httpx.Client) -> None:
    stats = client.get("/api/stats").json()
    assert set(stats) == {"node", "version", "uptime_s", "cameras", "models", "storage"}
    assert stats["node"] == "bench-7" and stats["version"] == __version__
    assert 42.0 <= stats["uptime_s"] < 42.0 + 600
    (camera,) = stats["cameras"]
    assert camera["name"] == "line1" and camera["state"] == "online"
    assert camera["drops"] == {"stale": 2} and camera["frames_read"] == 10
    assert stats["models"][0]["state"] == "ready" and stats["models"][0]["cameras"] == ["line1"]
    assert stats["storage"]["media_bytes"] == 12_345


def test_metrics_are_prometheus_text_with_storage_read_at_the_scrape(
    client: httpx.Client, view: FakeView, metrics: ServiceMetrics
) -> None:
    metrics.frame_read("line1")
    view.storage = StorageStats("/data", 777, 10**9, 888, 0, {"mqtt": 5})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples = {
        (sample.name, sample.labels.get("channel")): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples[("adedge_storage_media_bytes", None)] == 777
    assert samples[("adedge_storage_free_bytes", None)] == 888
    assert samples[("adedge_outbox_messages", "mqtt")] == 5
    assert samples[("adedge_camera_frames_read_total", None)] == 1
    # a disk that cannot be read leaves the last storage values and the rest still answers
    view.storage_error = OSError("I/O error")
    assert client.get("/metrics").status_code == 200


def test_openapi_docs_are_served(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/health/live", "/api/health/ready", "/api/stats", "/metrics"} <= set(paths)


def test_a_router_added_later_reads_the_same_service(view: FakeView) -> None:
    cameras = APIRouter(prefix="/api/cameras")

    @cameras.get("")
    def camera_names(service=Depends(service_view)) -> list[str]:  # noqa: B008
        return [camera.name for camera in service.camera_stats()]

    api = ApiServer(build_app(view, ServiceMetrics(), routers=[cameras]), ApiConfig(port=0), LOG)
    api.start()
    try:
        answer = httpx.get(f"http://127.0.0.1:{api.port}/api/cameras", timeout=20.0)
        assert answer.json() == ["line1"]
    finally:
        api.stop()


def test_a_taken_port_is_one_line_naming_the_key(server: ApiServer, view: FakeView) -> None:
    second = ApiServer(build_app(view, ServiceMetrics()), ApiConfig(port=server.port), LOG)
    with pytest.raises(AdedgeError) as caught:
        second.start()
    line = caught.value.one_line()
    assert f"api.port {server.port} is in use" in line and "another port" in line
    assert "\n" not in line
    second.stop()  # nothing started: a no-op


def test_a_host_that_is_not_this_machine_is_one_line(view: FakeView) -> None:
    config = ApiConfig(host="192.0.2.1", port=0)  # TEST-NET-1: never a local address
    with pytest.raises(AdedgeError, match="api.host 192.0.2.1 is not an address"):
        ApiServer(build_app(view, ServiceMetrics()), config, LOG).start()


def test_stop_returns_and_frees_the_port(view: FakeView) -> None:
    first = ApiServer(build_app(view, ServiceMetrics()), ApiConfig(port=0), LOG)
    first.start()
    port = first.port
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20.0) as http:
        assert http.get("/api/health/live").status_code == 200  # a kept-alive connection
        first.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/health/live", timeout=20.0)
    again = ApiServer(build_app(view, ServiceMetrics()), ApiConfig(port=port), LOG)
    again.start()  # a restarted service gets its port back
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/api/health/live", timeout=20.0).is_success
    finally:
        again.stop()
    with socket.create_server(("127.0.0.1", port)):
        pass
