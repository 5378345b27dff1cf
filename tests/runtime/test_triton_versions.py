"""A model version added to the repository of a running Triton server (poll mode) is picked up
while a client keeps sending: no request fails, every frame is scored, and the scores turn to
the new graph's (equal to local ONNX Runtime on that graph)."""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest
from bundles import max_score_bundle
from triton_python_repo import write_python_repository

from adedge.export.triton_repo import RepoOptions
from adedge.runtime.detector import Detector

pytestmark = pytest.mark.runtime
WAIT_S = 60.0  # a bound for the server's poll and load, never a measured time


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_S:.0f}s: {what}")
        time.sleep(0.1)


def test_version_two_is_picked_up_without_stopping_the_client(
    triton, mean_bundle, digit_frames, tmp_path
) -> None:
    server, _, _ = triton
    repo = server.repository
    options = RepoOptions(name="swap", instance_kind="cpu")
    (model,) = write_python_repository([mean_bundle], tmp_path / "v1", options)
    os.rename(tmp_path / "v1" / model, repo / model)  # whole, as the poll may look any time
    ready = f"{server.http_url}/v2/models/{model}/versions/{{}}/ready"
    wait_for(lambda: httpx.get(ready.format(1)).status_code == 200, f"{model} v1 loaded")

    remote = Detector(None, backend=server.address(model))
    frame = digit_frames[0]
    v1 = Detector(mean_bundle, threads=1).score_frames([frame])[0].score
    v2 = Detector(max_score_bundle(tmp_path / "max"), threads=1).score_frames([frame])[0].score
    assert abs(v1 - v2) > 0.1
    scores: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        try:
            while not stop.is_set():
                scores.append(remote.score_frames([frame])[0].score)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        wait_for(lambda: len(scores) >= 3 or errors, "first scores through v1")
        write_python_repository([max_score_bundle(tmp_path / "max")], tmp_path / "v2", options, 2)
        os.rename(tmp_path / "v2" / model / "2", repo / model / "2")
        wait_for(lambda: errors or (scores and abs(scores[-1] - v2) < 1e-5), "scores of v2")
        seen = len(scores)
        wait_for(lambda: len(scores) >= seen + 3 or errors, "more scores after the swap")
    finally:
        stop.set()
        thread.join(timeout=30)
        remote.bundle.close()
    assert not errors
    assert all(abs(s - v1) < 1e-5 or abs(s - v2) < 1e-5 for s in scores)
    first_v2 = next(i for i, s in enumerate(scores) if abs(s - v2) < 1e-5)
    assert all(abs(s - v2) < 1e-5 for s in scores[first_v2:])  # no step back to v1
