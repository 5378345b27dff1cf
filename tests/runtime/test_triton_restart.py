"""Killing the Triton server while a client sends, and starting it again on the same ports:
the triton backend reconnects with back-off and every frame is scored (none lost, none
failed), with the same scores as before the crash."""

from __future__ import annotations

import threading
import time

import pytest
from triton_python_repo import write_python_repository
from triton_server import free_ports, pytriton_missing, start_server

from adedge.runtime.detector import Detector

pytestmark = pytest.mark.runtime
FRAMES = 200  # ~0.7 s of sending: the kill lands in the middle


def serve_mean_bundle(tmp_path, mean_bundle):
    """A real tritonserver serving the mean bundle: (server, model name, its three ports,
    to restart it on the same ones)."""
    missing = pytriton_missing()
    if missing:
        pytest.skip(missing)
    (model,) = write_python_repository([mean_bundle], tmp_path / "repo")
    server = start_server(tmp_path / "repo", tmp_path)
    return server, model, (server.http_port, server.grpc_port, server.metrics_port)


def score_until_the_server_is_used(detector, frames, expected) -> None:
    """Score ``frames`` in rounds, each equal to ``expected``, until a round runs on the
    server (the fallback ran none of it)."""
    backend = detector.stages[0].backend
    deadline = time.monotonic() + 30  # a bound, never a measured time
    while True:
        local_runs = backend.fallbacks
        scores = [f.score for f in detector.score_frames(frames)]
        assert scores == pytest.approx(expected, abs=1e-5)
        if backend.fallbacks == local_runs:
            return
        assert time.monotonic() < deadline, "the server was never used"
        time.sleep(0.1)


def local_scores(bundle, frames) -> list[float]:
    return [f.score for f in Detector(bundle, threads=1).score_frames(frames)]


@pytest.mark.parametrize("via", ["http", "grpc"])
def test_client_reconnects_after_the_server_restarts(tmp_path, mean_bundle, digit_frames, via):
    server, model, ports = serve_mean_bundle(tmp_path, mean_bundle)
    remote = Detector(None, backend=server.address(model, via))
    expected = local_scores(mean_bundle, digit_frames)
    scores: list[float] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            for index in range(FRAMES):
                frame = digit_frames[index % len(digit_frames)]
                scores.append(remote.score_frames([frame])[0].score)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    thread = threading.Thread(target=client)
    try:
        thread.start()
        while len(scores) < 5 and thread.is_alive():
            time.sleep(0.01)
        server.kill()
        killed_at = len(scores)
        server = start_server(tmp_path / "repo", tmp_path, ports=ports)
        thread.join(timeout=60)
    finally:
        remote.bundle.close()
        server.stop()
    assert not errors
    assert killed_at < FRAMES  # the crash happened while the client was sending
    assert len(scores) == FRAMES
    wanted = [expected[i % len(expected)] for i in range(FRAMES)]
    assert max(abs(a - b) for a, b in zip(scores, wanted, strict=True)) <= 1e-5
    assert remote.stages[0].backend.transport.reconnects >= 1


@pytest.mark.parametrize("via", ["http", "grpc"])
def test_local_fallback_while_the_server_is_down(tmp_path, mean_bundle, digit_frames, via):
    """With the bundle as fallback, frames are scored locally while the server is down (at
    once, no back-off) and through the server again once it is back."""
    server, model, ports = serve_mean_bundle(tmp_path, mean_bundle)
    detector = Detector(mean_bundle, backend=server.address(model, via))
    backend = detector.stages[0].backend
    expected = local_scores(mean_bundle, digit_frames)
    try:
        assert [f.score for f in detector.score_frames(digit_frames)] == pytest.approx(expected)
        assert backend.fallbacks == 0
        server.kill()
        down = [f.score for f in detector.score_frames(digit_frames)]
        assert down == pytest.approx(expected, abs=1e-5)
        assert backend.fallbacks >= 1 and backend.transport.reconnects == 0
        server = start_server(tmp_path / "repo", tmp_path, ports=ports)
        score_until_the_server_is_used(detector, digit_frames, expected)
    finally:
        detector.bundle.close()
        server.stop()


@pytest.mark.parametrize("via", ["http", "grpc"])
def test_local_fallback_from_the_start_when_the_server_is_down(
    tmp_path, mean_bundle, digit_frames, via
):
    """A box that boots before its Triton server: with the fallback bundle the detector is
    built from the bundle's card and scores locally; once the server is up its config is
    read (and its card checked) and the frames go there."""
    missing = pytriton_missing()
    if missing:
        pytest.skip(missing)
    (model,) = write_python_repository([mean_bundle], tmp_path / "repo")
    http, grpc, metrics = free_ports(3)
    target = f"triton://127.0.0.1:{grpc}" if via == "grpc" else f"triton+http://127.0.0.1:{http}"
    detector = Detector(mean_bundle, backend=f"{target}/{model}")
    backend = detector.stages[0].backend
    expected = local_scores(mean_bundle, digit_frames)
    server = None
    try:
        assert [f.score for f in detector.score_frames(digit_frames)] == pytest.approx(expected)
        assert backend.fallbacks >= 1 and backend.max_batch is None  # no config read yet
        server = start_server(tmp_path / "repo", tmp_path, ports=(http, grpc, metrics))
        score_until_the_server_is_used(detector, digit_frames, expected)
        assert backend.max_batch is not None  # read from the server's config
    finally:
        detector.close()
        if server is not None:
            server.stop()
