"""Config reload and run-time settings that outlive a restart, on a real service with the
scene whose outcome is certain (score = brightest pixel, threshold 0.5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import wait_until
from serve_scenes import camera, half_bright_bundle, service_config, write_scene

from adedge.runtime.serve.api_types import CameraPatch, Refused, RulePatch
from adedge.runtime.serve.config import parse_config
from adedge.runtime.serve.reload import plan_reload
from adedge.runtime.serve.service import Service

pytestmark = pytest.mark.runtime


def start(path: Path) -> Service:
    from adedge.runtime.serve.config import load_config

    log: list[str] = []
    service = Service(load_config(path), log.append, config_path=path)
    service.log_lines = log  # type: ignore[attr-defined]
    service.start()
    return service


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_reload_applies_what_it_can_and_names_what_needs_a_restart(
    tmp_path: Path, bundle: Path
) -> None:
    video = write_scene(tmp_path / "scene.avi", 40, defects=range(0))
    data = service_config(
        tmp_path, {"line1": camera(video, loop=True)}, bundle, api={"enabled": True, "port": 0}
    )
    path = write(tmp_path / "adedge.yaml", data)
    service = start(path)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{service.api.port}", timeout=30)
        first = service.cameras["line1"]
        wait_until(lambda: first.frames_scored > 3, 30, "frames scored")
        data["cameras"]["line1"]["threshold"] = 0.9  # live: same camera thread
        data["cameras"]["line1"]["alarm"] = {"k": 1, "n": 2, "cooldown_s": 0.5}
        data["cameras"]["line2"] = camera(video, loop=True)  # a new camera
        data["models"]["bright"]["max_batch"] = 8  # live
        data["node"]["id"] = "line-renamed"  # needs a restart
        write(path, data)
        answer = client.post("/api/config/reload")
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert report["restart_required"] == ["node"]
        assert set(report["applied"]) == {
            "model bright batching/watch updated",
            "camera line2 added",
            "camera line1: alarm, threshold updated",
        }
        assert service.cameras["line1"] is first  # not restarted
        info = client.get("/api/cameras/line1").json()
        assert info["threshold"] == 0.9 and info["threshold_source"] == "config"
        assert info["alarm_rule"]["k"] == 1 and info["alarm_rule"]["n"] == 2
        assert service.engines["bright"].max_batch == 8
        assert service.node == "line-test"  # not applied
        wait_until(lambda: service.cameras["line2"].frames_scored > 3, 30, "line2 scores")
        data["cameras"].pop("line2")
        data["cameras"]["line1"]["source"] = str(video) + "?every=2"  # restarts line1 alone
        write(path, data)
        report = client.post("/api/config/reload").json()
        assert "camera line2 removed" in report["applied"]
        assert "camera line1 restarted" in report["applied"]
        assert set(service.cameras) == {"line1"} and service.cameras["line1"] is not first
        names = [c["name"] for c in client.get("/api/cameras").json()]
        assert names == ["line1"]
        client.close()
    finally:
        service.stop()


def test_a_refused_reload_keeps_the_running_config(tmp_path: Path, bundle: Path) -> None:
    video = write_scene(tmp_path / "scene.avi", 40, defects=range(0))
    data = service_config(tmp_path, {"line1": camera(video, loop=True)}, bundle)
    path = write(tmp_path / "adedge.yaml", data)
    service = start(path)
    try:
        data["cameras"]["line1"]["model"] = "missing"
        write(path, data)
        with pytest.raises(Refused, match=r"cameras\.line1\.model: 'missing'"):
            service.reload_config()
        assert service.config.cameras["line1"].model == "bright"
        assert service.cameras["line1"].running
    finally:
        service.stop()


def test_run_time_changes_outlive_a_restart_until_the_config_is_edited(
    tmp_path: Path, bundle: Path
) -> None:
    video = write_scene(tmp_path / "scene.avi", 40, defects=range(0))
    data = service_config(tmp_path, {"line1": camera(video, loop=True)}, bundle)
    path = write(tmp_path / "adedge.yaml", data)
    second = half_bright_bundle(tmp_path / "second")
    service = start(path)
    try:
        wait_until(lambda: service.cameras["line1"].frames_scored > 3, 30, "frames scored")
        service.update_camera(
            "line1", CameraPatch(threshold=0.7, detect=False, alarm=RulePatch(k=2, n=4))
        )
        service.load_model("bright", second)
    finally:
        service.stop()
    kept = json.loads((tmp_path / "store" / "settings.json").read_text())
    assert kept["cameras"]["line1"] == {
        "detect": False,
        "threshold": 0.7,
        "alarm": {"k": 2, "n": 4, "cooldown_s": 0.2, "hysteresis": 0.0},
    }
    service = start(path)  # the same config file: the run-time values come back
    try:
        info = service.camera_info("line1")
        assert (info.threshold, info.threshold_source, info.detect) == (0.7, "runtime", False)
        assert (info.alarm_rule.k, info.alarm_rule.n) == (2, 4)
        (model,) = service.models_info()
        assert model.bundle == str(second) and model.card_threshold == 0.25
        service.update_camera("line1", CameraPatch(clear_threshold=True))
        assert service.camera_info("line1").threshold_source == "card"
        with pytest.raises(Refused, match="k"):
            service.update_camera("line1", CameraPatch(alarm=RulePatch(k=5)))
    finally:
        service.stop()
    other = tmp_path / "third"
    half_bright_bundle(other)
    data["models"]["bright"]["bundle"] = str(other)  # the config edited: it wins
    write(path, data)
    service = start(path)
    try:
        (model,) = service.models_info()
        assert model.bundle == str(other)
    finally:
        service.stop()


def test_the_reload_plan_sorts_changes_by_how_they_apply(tmp_path: Path) -> None:
    base = {
        "models": {"a": {"bundle": "a"}, "b": {"bundle": "b"}},
        "cameras": {
            "c1": {"source": "x.mp4", "model": "a"},
            "c2": {"source": "y.mp4", "model": "b"},
        },
    }
    running = parse_config(base)
    new = parse_config(
        {
            "models": {"a": {"bundle": "a2"}, "n": {"bundle": "n"}},
            "cameras": {
                "c1": {"source": "x.mp4", "model": "a", "detect": False},
                "c3": {"source": "z.mp4", "model": "n"},
            },
            "mqtt": {"host": "broker"},
        }
    )
    plan = plan_reload(running, new)
    assert plan.restart_required == ["mqtt"]
    assert (plan.models_swapped, plan.models_added, plan.models_removed) == (["a"], ["n"], ["b"])
    assert plan.cameras_tuned == {"c1": {"detect"}}
    assert (plan.cameras_added, plan.cameras_removed) == (["c3"], ["c2"])
