"""`adedge serve`'s configuration: the schema, ${ENV} secrets, one-line errors that name the
key path, --check and --print-schema (no service is started)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from bundles import write_tile_bundle
from cli_helpers import assert_one_line_error, run_cli

from adedge.runtime.serve.config import ConfigError, load_config, parse_config, redacted

pytestmark = pytest.mark.runtime


def minimal(**camera: object) -> dict:
    return {
        "models": {"m": {"bundle": "models/m"}},
        "cameras": {"line3": {"source": "synthetic", "model": "m", **camera}},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"alarm": {"k": 0}}, "cameras.line3.alarm.k: must be >= 1"),
        ({"alarm": {"k": 5, "n": 3}}, "cameras.line3.alarm: k (5) must be <= n (3)"),
        ({"srouce": "x"}, "cameras.line3.srouce: unknown key"),
        ({"model": "nope"}, "cameras.line3.model: 'nope' is not under 'models'"),
        ({"fps": -1}, "cameras.line3.fps: must be > 0"),
        ({"masks": [[[0, 0], [1.5, 0], [0, 1]]]}, "cameras.line3.masks: polygon 0 has point"),
        ({"masks": [[[0, 0], [1, 0]]]}, "polygon 0 has 2 points; needs 3 or more"),
        ({"resize": "big"}, "cameras.line3.resize: resize 'big' is not WIDTHxHEIGHT"),
        ({"threshold": float("nan")}, "cameras.line3.threshold: must be a finite number"),
    ],
)
def test_a_bad_camera_is_one_line_naming_its_key_path(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(minimal(**change))
    line = caught.value.one_line()
    assert message in line and "\n" not in line


def test_model_and_section_errors_name_their_keys() -> None:
    data = minimal()
    data["models"]["m"]["backend"] = "cuda"
    with pytest.raises(ConfigError, match=r"models\.m: unknown backend 'cuda'"):
        parse_config(data)
    with pytest.raises(ConfigError, match=r"mqtt\.host: is required"):
        parse_config({**minimal(), "mqtt": {"port": 1883}})
    with pytest.raises(ConfigError, match=r"webhooks\.qa\.url"):
        parse_config({**minimal(), "webhooks": {"qa": {"url": "ftp://x"}}})
    with pytest.raises(ConfigError, match=r"cameras: Field required|cameras: is required"):
        parse_config({"models": {}})
    with pytest.raises(ConfigError, match="camera name 'line 3'"):
        parse_config(
            {"models": {"m": {"bundle": "b"}}, "cameras": {"line 3": {"source": "s", "model": "m"}}}
        )


def test_secrets_come_from_the_environment_and_are_redacted() -> None:
    data = {**minimal(), "mqtt": {"host": "broker", "username": "u", "password": "${MQTT_PW}"}}
    data["webhooks"] = {
        "qa": {"url": "https://h/x", "headers": {"Authorization": "${TOKEN:-none}"}}
    }
    config = parse_config(data, env={"MQTT_PW": "hunter2"})
    assert config.mqtt is not None and config.mqtt.password == "hunter2"
    assert config.webhooks["qa"].headers["Authorization"] == "none"
    shown = json.dumps(redacted(config))
    assert "hunter2" not in shown and '"password": "***"' in shown
    assert "hunter2" not in repr(config)
    with pytest.raises(
        ConfigError, match=r"mqtt\.password: environment variable MQTT_PW is not set"
    ):
        parse_config(data, env={})


def test_yaml_errors_say_where(tmp_path: Path) -> None:
    path = tmp_path / "adedge.yaml"
    path.write_text("cameras:\n  a: [unclosed\n")
    with pytest.raises(ConfigError, match="at line"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        load_config(path)


def test_check_validates_without_starting(tmp_path: Path, monkeypatch, capsys) -> None:
    bundle = write_tile_bundle(tmp_path / "bundle", None, size=32)
    config = tmp_path / "adedge.yaml"
    data = minimal()
    data["models"]["m"]["bundle"] = str(bundle)
    data["storage"] = {"path": str(tmp_path / "store")}
    config.write_text(yaml.safe_dump(data))
    code, out, err = run_cli(monkeypatch, capsys, "serve", "--config", config, "--check")
    assert code == 0, err
    assert "config OK" in out + err and "line3" in out + err
    assert not (tmp_path / "store").exists()  # nothing started, nothing written
    data["models"]["m"]["bundle"] = str(tmp_path / "nowhere")
    config.write_text(yaml.safe_dump(data))
    code, out, err = run_cli(monkeypatch, capsys, "serve", "--config", config, "--check")
    assert_one_line_error(code, err, "models.m.bundle")
    data["cameras"]["line3"]["alarm"] = {"k": 0}
    config.write_text(yaml.safe_dump(data))
    code, out, err = run_cli(monkeypatch, capsys, "serve", "--config", config)
    assert_one_line_error(code, err, "cameras.line3.alarm.k: must be >= 1")


def test_print_schema_is_the_json_schema(monkeypatch, capsys) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "serve", "--print-schema")
    assert code == 0, err
    schema = json.loads(out)
    assert {"node", "models", "cameras", "mqtt", "webhooks", "api", "storage"} <= set(
        schema["properties"]
    )
    assert "AlarmRule" in schema["$defs"]


def test_nothing_to_serve_and_both_forms_are_refused(monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "serve")
    assert_one_line_error(code, err, "nothing to serve")
    code, _, err = run_cli(monkeypatch, capsys, "serve", "--config", "a.yaml", "--source", "x")
    assert_one_line_error(code, err, "both given")


def test_the_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "examples" / "adedge.yaml"
    env = {"CAM_USER": "u", "CAM_PASSWORD": "p", "MQTT_PASSWORD": "m", "QA_TOKEN": "t"}
    config = load_config(example, env=env)
    assert set(config.cameras) == {"line3", "belt"}
    assert config.cameras["line3"].source == "rtsp://u:p@10.0.0.13/stream1"
