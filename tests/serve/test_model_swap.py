"""Swapping a model while cameras stream: through the HTTP API of a real ``adedge serve``
process and of an in-process service, with the scene whose scores are certain.

Two bundles with the same graph tell apart which one scored a frame: the first scores the
brightest pixel (threshold 0.5), the second half of it (input std 2, threshold 0.25). A
normal scene frame (grey 40) scores 0.157 under the first and 0.078 under the second.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from bundles import onnx_model, tensor, write_bundle
from conftest import free_port, wait_until
from onnx import TensorProto, helper
from serve_scenes import (
    camera,
    end_process,
    half_bright_bundle,
    running_service,
    service_config,
    start_serve_process,
    write_scene,
)

from adedge.preprocess import InputSpec

pytestmark = pytest.mark.runtime

FIRST_NORMAL = 40 / 255  # a normal frame's score under the first bundle
SPLIT = 0.12  # between a normal frame's score under the second bundle and the first's


def nan_bundle(folder: Path) -> Path:
    """A valid bundle whose graph scores every image NaN (0/0)."""
    shape = ["N", 1, 64, 64]
    graph = onnx_model(
        [
            helper.make_node("Sub", ["image", "image"], ["zero"]),
            helper.make_node("Div", ["zero", "zero"], ["nan"]),
            helper.make_node("ReduceMax", ["nan"], ["score"], axes=[1, 2, 3], keepdims=0),
        ],
        [tensor("image", TensorProto.FLOAT, shape)],
        [tensor("score", TensorProto.FLOAT, ["N"])],
        name="nan",
    )
    spec = InputSpec(64, 64, "gray", (0.0,), (1.0,))
    return write_bundle(
        folder,
        graph,
        spec,
        method="tile-max",
        threshold=0.5,
        detail="broken",
        stage="local",
        outputs=("score",),
        tiling=None,
        reduce="max",
    )


def tampered_copy(bundle: Path, folder: Path) -> Path:
    """A copy of ``bundle`` whose graph no longer matches the sha256 in its card."""
    shutil.copytree(bundle, folder)
    graph = folder / "local.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    return folder


def stats_camera(client: httpx.Client, name: str = "line1") -> dict[str, Any]:
    cameras = client.get("/api/stats").json()["cameras"]
    return next(c for c in cameras if c["name"] == name)


def test_a_swap_during_a_stream_scores_every_frame_exactly_once(
    tmp_path: Path, bundle: Path
) -> None:
    frames = 400
    video = write_scene(tmp_path / "scene.avi", frames, defects=range(150, 170))
    jsonl = tmp_path / "line1.jsonl"
    port = free_port()
    data = service_config(
        tmp_path,
        {"line1": camera(video, fps=40, jsonl=str(jsonl))},
        bundle,
        api={"enabled": True, "port": port},
    )
    second = half_bright_bundle(tmp_path / "second")
    process = start_serve_process(tmp_path, data)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_until(lambda: _answers(client), 60, "the API answers")
            wait_until(lambda: stats_camera(client)["frames_scored"] >= 60, 60, "60 frames")
            answer = client.post("/api/models/bright/load", json={"bundle": str(second)})
            assert answer.status_code == 200, answer.text
            report = answer.json()
            assert report["generation"] == 2 and not report["same_graphs"]
            assert report["new_sha256"] != report["old_sha256"]
            assert report["new_threshold"] == 0.25
            (checked,) = report["frames_checked"]
            assert checked["camera"] == "line1"
            assert checked["new_score"] == pytest.approx(checked["old_score"] / 2, abs=1e-6)
            wait_until(lambda: stats_camera(client)["state"] == "ended", 90, "the file ends")
            line = stats_camera(client)
            (model,) = client.get("/api/models").json()
            assert model["bundle"] == str(second) and model["generation"] == 2
    finally:
        code, out = end_process(process, signal.SIGTERM)
    assert code == 143, out  # 128 + SIGTERM: stopped cleanly by the signal
    records = [json.loads(row) for row in jsonl.read_text().splitlines()]
    scored = [r for r in records if r["type"] == "frame"]
    # frame accounting: every frame read was scored, once, in order
    assert [r["frame"] for r in scored] == list(range(frames))
    assert line["frames_read"] == line["frames_scored"] == frames
    assert sum(line["drops"].values()) == 0
    # one switch from the first model to the second, never back
    models = [r["threshold"] for r in scored]
    switch = models.index(0.25)
    assert 0 < switch < frames and set(models[:switch]) == {0.5} and set(models[switch:]) == {0.25}
    # each frame's score is the one of the model whose threshold it was compared with
    assert all(r["score"] > SPLIT for r in scored[:switch])
    normal_after = [r["score"] for r in scored[switch:] if not 150 <= r["frame"] < 170]
    assert normal_after and max(normal_after) < SPLIT
    assert "swapped to" in out


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/api/health/live").status_code == 200
    except httpx.TransportError:
        return False


def test_bad_bundles_are_refused_and_the_running_model_goes_on(
    tmp_path: Path, bundle: Path
) -> None:
    video = write_scene(tmp_path / "scene.avi", 60, defects=range(0))
    data = service_config(
        tmp_path,
        {"line1": camera(video, loop=True)},
        bundle,
        api={"enabled": True, "port": 0},
    )
    broken = nan_bundle(tmp_path / "nan")
    tampered = tampered_copy(bundle, tmp_path / "tampered")
    not_a_bundle = tmp_path / "empty"
    not_a_bundle.mkdir()
    with running_service(data) as service:
        url = f"http://127.0.0.1:{service.api.port}"
        with httpx.Client(base_url=url, timeout=30) as client:
            wait_until(lambda: stats_camera(client)["frames_scored"] > 5, 30, "frames scored")
            answers = {
                name: client.post("/api/models/bright/load", json={"bundle": str(path)})
                for name, path in (("nan", broken), ("sha", tampered), ("none", not_a_bundle))
            }
            assert {name: a.status_code for name, a in answers.items()} == dict.fromkeys(
                answers, 409
            )
            assert "score of nan" in answers["nan"].json()["detail"]
            assert "sha256" in answers["sha"].json()["detail"]
            assert "not a bundle" in answers["none"].json()["detail"]
            unknown = client.post("/api/models/other/load", json={"bundle": str(bundle)})
            assert unknown.status_code == 404 and "bright" in unknown.json()["detail"]
            (model,) = client.get("/api/models").json()
            assert model["generation"] == 1 and model["bundle"] == str(bundle)
            before = stats_camera(client)["frames_scored"]
            wait_until(lambda: stats_camera(client)["frames_scored"] > before + 5, 30, "go on")
            metrics = client.get("/metrics").text
            assert 'adedge_model_swaps_total{model="bright",outcome="refused"} 3.0' in metrics
            assert 'adedge_model_swaps_total{model="bright",outcome="swapped"} 0.0' in metrics
        assert not (tmp_path / "store" / "settings.json").exists()  # nothing was kept


def test_a_watched_bundle_folder_is_swapped_in_when_it_changes(
    tmp_path: Path, bundle: Path
) -> None:
    live = tmp_path / "live-bundle"
    shutil.copytree(bundle, live)
    video = write_scene(tmp_path / "scene.avi", 60, defects=range(0))
    data = service_config(tmp_path, {"line1": camera(video, loop=True)}, live)
    data["models"]["bright"]["watch"] = True
    with running_service(data) as service:
        engine = service.engines["bright"]
        wait_until(lambda: service.cameras["line1"].frames_scored > 5, 30, "frames scored")
        shutil.rmtree(live)
        tampered_copy(bundle, live)  # a broken deploy: refused, the old model goes on
        wait_until(lambda: any("refused" in line for line in service.log_lines), 30, "refusal")
        assert engine.generation == 1
        shutil.rmtree(live)
        half_bright_bundle(live)  # the fixed deploy
        wait_until(lambda: engine.generation == 2, 30, "the watched swap")
        assert engine.detector is not None and engine.detector.threshold == 0.25
        scored = service.cameras["line1"].frames_scored
        wait_until(lambda: service.cameras["line1"].frames_scored > scored + 5, 30, "go on")
        latest = service.live_frame("line1")
        assert latest is not None and latest.threshold == 0.25
        assert np.isclose(latest.score, FIRST_NORMAL / 2, atol=0.02)
