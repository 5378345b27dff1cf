"""The triton backend against a real Triton server (nvidia-pytriton's tritonserver, its
Python backend running each stage's ONNX graph): the card comes from the server, scores and
heatmaps equal local ONNX Runtime's, concurrent clients' requests are batched by Triton (its
metrics), and an unreachable server or a bad address is a one-line error."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from bundles import defect_frame
from triton_camera_frames import camera_frame
from triton_server import free_ports

from adedge.errors import AdedgeError
from adedge.runtime.backends.triton import TritonUnavailable
from adedge.runtime.detector import Detector
from adedge.triton_address import TritonProtocol, parse_triton_address

pytestmark = pytest.mark.runtime
TOLERANCE = 1e-5
TESTS = Path(__file__).resolve().parents[1]


PROTOCOLS = pytest.mark.parametrize("via", ["http", "grpc"])


def tiled_frames(count: int) -> list[np.ndarray]:
    """Real-looking BGR frames (tests/bundles.py's defect frame), each shifted and dimmed."""
    base = defect_frame()
    return [np.roll(base, 7 * i, axis=1) // (1 + i % 3) for i in range(count)]


@PROTOCOLS
def test_mean_scores_equal_local_onnxruntime(triton, digit_frames, via: str) -> None:
    server, bundles, models = triton
    remote = Detector(None, backend=server.address(models["mean"], via))
    local = Detector(bundles["mean"], threads=1)
    assert remote.card.to_dict() == local.card.to_dict()
    assert remote.threshold == local.threshold
    through = remote.score_frames(digit_frames)
    direct = local.score_frames(digit_frames)
    np.testing.assert_allclose(
        [f.score for f in through], [f.score for f in direct], rtol=0, atol=TOLERANCE
    )
    assert [f.anomalous for f in through] == [f.anomalous for f in direct]
    remote.bundle.close()


@PROTOCOLS
def test_tiled_scores_and_maps_equal_local_onnxruntime(triton, via: str) -> None:
    server, bundles, models = triton
    remote = Detector(None, backend=server.address(models["tiles"], via))
    local = Detector(bundles["tiles"], threads=1)
    frames = tiled_frames(3)
    through, direct = remote.score_frames(frames), local.score_frames(frames)
    for a, b in zip(through, direct, strict=True):
        assert abs(a.score - b.score) <= TOLERANCE
        assert a.amap is not None and a.amap.shape == b.amap.shape == frames[0].shape[:2]
        np.testing.assert_allclose(a.amap, b.amap, rtol=0, atol=TOLERANCE)
    remote.bundle.close()


@PROTOCOLS
def test_two_stages_run_as_two_models(triton, via: str) -> None:
    """The address names the last stage's model; the card's other stage is found beside it
    (``two_global``), and the weighted sum and heatmaps equal the local ones."""
    server, bundles, models = triton
    assert models["two"] == "two_local"
    remote = Detector(None, backend=server.address(models["two"], via))
    assert [s.backend.model for s in remote.stages] == ["two_global", "two_local"]
    local = Detector(bundles["two"], threads=1)
    frames = tiled_frames(2)
    for a, b in zip(remote.score_frames(frames), local.score_frames(frames), strict=True):
        assert abs(a.score - b.score) <= TOLERANCE
        np.testing.assert_allclose(a.amap, b.amap, rtol=0, atol=TOLERANCE)
    remote.bundle.close()


def counter(metrics: str, name: str, model: str) -> float:
    found = re.search(rf'^{name}\{{model="{re.escape(model)}",version="1"\}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


def test_concurrent_clients_are_batched_by_triton(triton) -> None:
    """Two clients (one Detector each) send one frame (12 tiles) per request together; the
    model waits up to 100 ms for 48 rows, so Triton runs fewer batches than requests."""
    server, _, models = triton
    model = models["tiles"]
    names = ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count")
    before = {n: counter(server.metrics(), n, model) for n in names}
    clients = [Detector(None, backend=server.address(model)) for _ in range(2)]
    frames = tiled_frames(4)
    barrier = threading.Barrier(len(clients))
    errors: list[BaseException] = []

    def send(detector: Detector) -> None:
        try:
            for frame in frames:
                barrier.wait(timeout=30)
                detector.score_frames([frame])
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=send, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for client in clients:
        client.bundle.close()
    assert not errors
    after = {n: counter(server.metrics(), n, model) for n in names}
    delta = {n: after[n] - before[n] for n in names}
    requests = len(clients) * len(frames)
    assert delta["nv_inference_request_success"] == requests
    assert delta["nv_inference_count"] == requests * 12
    assert delta["nv_inference_exec_count"] < delta["nv_inference_count"]
    assert delta["nv_inference_exec_count"] < requests  # requests of both clients ran together


@pytest.mark.parametrize("scheme", ["triton+http", "triton"])
def test_unreachable_server_is_one_line_error(scheme: str) -> None:
    (port,) = free_ports(1)
    with pytest.raises(TritonUnavailable) as caught:
        Detector(None, backend=f"{scheme}://127.0.0.1:{port}/m_global")
    assert "unreachable" in caught.value.message and "\n" not in caught.value.one_line()
    assert caught.value.transport


@PROTOCOLS
def test_unknown_model_is_refused(triton, via: str) -> None:
    server, _, _ = triton
    with pytest.raises(TritonUnavailable, match="refused") as caught:
        Detector(None, backend=server.address("no_such_model", via))
    assert not caught.value.transport


def test_fallback_bundle_must_be_the_served_model(triton) -> None:
    server, bundles, models = triton
    with pytest.raises(AdedgeError, match="is not the model"):
        Detector(bundles["tiles"], backend=server.address(models["mean"]))


@pytest.mark.parametrize(
    "name",
    [
        "triton+http://127.0.0.1:8000/",
        "triton+ftp://h/m",
        "triton://h/a/b",
        "triton://user:pw@h/m",
        "triton://h:port/m",
        "triton://h/m?version=2",
    ],
)
def test_bad_addresses(name: str) -> None:
    with pytest.raises(AdedgeError):
        parse_triton_address(name)


def test_address_parts() -> None:
    parsed = parse_triton_address("triton+http://10.0.0.5:8000/line1_global")
    assert (parsed.target, parsed.model) == ("http://10.0.0.5:8000", "line1_global")
    grpc = parse_triton_address("triton://Triton-A/Line1_Global")  # the model keeps its case
    assert (grpc.protocol, grpc.target, grpc.model) == (
        TritonProtocol.GRPC,
        "triton-a:8001",
        "Line1_Global",
    )
    assert str(grpc) == "triton://triton-a:8001/Line1_Global"
    assert parse_triton_address("triton+grpc://[::1]:9001/m").target == "[::1]:9001"
    assert parse_triton_address("triton+https://h/m").target == "https://h:8000"


def test_two_client_processes_of_four_cameras(triton) -> None:
    """2 processes x 4 cameras send one frame per request to the tiled model: every score
    equals local ONNX Runtime's, and Triton ran fewer batches than requests (it batched
    requests of different cameras, whichever process they came from)."""
    server, bundles, models = triton
    model = models["tiles"]
    processes, cameras, frames = 2, 4, 3
    names = ("nv_inference_request_success", "nv_inference_exec_count")
    before = {n: counter(server.metrics(), n, model) for n in names}
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    command = [sys.executable, str(TESTS / "triton_camera_frames.py"), server.address(model)]
    running = [
        subprocess.Popen(
            [*command, str(cameras), str(frames)], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(processes)
    ]
    outputs = [json.loads(p.communicate(timeout=120)[0]) for p in running]
    assert [p.returncode for p in running] == [0] * processes
    local = Detector(bundles["tiles"], threads=1)
    for scores in outputs:
        for camera in range(cameras):
            wanted = [local.score_frames([camera_frame(camera, i)])[0].score for i in range(frames)]
            np.testing.assert_allclose(scores[str(camera)], wanted, rtol=0, atol=TOLERANCE)
    after = {n: counter(server.metrics(), n, model) for n in names}
    requests = processes * cameras * frames
    assert after["nv_inference_request_success"] - before["nv_inference_request_success"] == (
        requests
    )
    assert after["nv_inference_exec_count"] - before["nv_inference_exec_count"] < requests
