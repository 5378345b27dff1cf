"""`--backend triton://...` on the commands a user types, against a real Triton server
(the `triton` fixture): `eval` and `stream` give the scores local ONNX Runtime gives,
`bench` times the server's model, and `adedge serve` runs a camera on a Triton model, with
the bundle as its local fallback when the config says ``fallback: local``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import pytest
from cli_helpers import assert_one_line_error, run_cli
from triton_server import free_ports

from adedge.runtime.detector import Detector

pytestmark = pytest.mark.runtime
TOLERANCE = 1e-5


def frame_records(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if r.get("type", "frame") == "frame" and "score" in r]


@pytest.mark.parametrize("via", ["grpc", "http"])
def test_eval_through_triton_equals_local(triton, monkeypatch, capsys, tmp_path, via) -> None:
    server, bundles, models = triton
    data = "digits:anomaly=0,limit=120"
    local, remote = tmp_path / "local.json", tmp_path / "remote.json"
    code, _, err = run_cli(
        monkeypatch, capsys, "eval", "--model", bundles["mean"], "--data", data,
        "--out", local, "--threads", "1",
    )  # fmt: skip
    assert code == 0, err
    backend = server.address(models["mean"], via)
    code, _, err = run_cli(
        monkeypatch, capsys, "eval", "--backend", backend, "--data", data, "--out", remote
    )
    assert code == 0, err
    a, b = json.loads(local.read_text()), json.loads(remote.read_text())
    assert b["model"] == backend
    for key in ("n_test", "n_anomalous", "threshold", "tpr", "tnr"):
        assert a[key] == b[key], key
    assert abs(a["auroc"] - b["auroc"]) <= 1e-9


def test_eval_default_out_names_the_triton_model(triton, monkeypatch, capsys, tmp_path) -> None:
    server, _, models = triton
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(
        monkeypatch, capsys, "eval", "--backend", server.address(models["mean"], "grpc"),
        "--data", "digits:anomaly=0,limit=60",
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / f"eval-{models['mean']}.json").is_file()


def test_stream_through_triton_equals_local(
    triton, monkeypatch, capsys, tmp_path, digit_folder
) -> None:
    """The same folder streamed through the tiled model on the server and locally: every
    frame's score in the JSONL log is the same."""
    server, bundles, models = triton
    logs = {}
    for name, options in {
        "local": ["--model", bundles["tiles"], "--threads", "1"],
        "triton": ["--backend", server.address(models["tiles"], "grpc")],
    }.items():
        logs[name] = tmp_path / f"{name}.jsonl"
        code, _, err = run_cli(
            monkeypatch, capsys, "stream", "--source", digit_folder, "--jsonl", logs[name],
            "--quiet", "--headless", *options,
        )  # fmt: skip
        assert code == 0, err
    local, remote = frame_records(logs["local"]), frame_records(logs["triton"])
    assert len(local) == len(remote) > 0
    for a, b in zip(local, remote, strict=True):
        assert abs(a["score"] - b["score"]) <= TOLERANCE


def test_stream_falls_back_to_the_model_when_no_server_answers(
    monkeypatch, capsys, tmp_path, mean_bundle, digit_folder
) -> None:
    """No server on the port: with --model the stream scores every frame locally."""
    (port,) = free_ports(1)
    log = tmp_path / "out.jsonl"
    code, _, err = run_cli(
        monkeypatch, capsys, "stream", "--source", digit_folder, "--jsonl", log, "--quiet",
        "--backend", f"triton://127.0.0.1:{port}/mean_global", "--model", mean_bundle,
    )  # fmt: skip
    assert code == 0, err
    expected = [f.score for f in Detector(mean_bundle, threads=1).score_frames(
        [cv2.imread(str(p)) for p in sorted(digit_folder.glob("*.png"))]
    )]  # fmt: skip
    assert [r["score"] for r in frame_records(log)] == pytest.approx(expected, abs=TOLERANCE)
    assert "local fallback" in err


def test_stream_without_server_or_fallback_is_one_line(monkeypatch, capsys, digit_folder) -> None:
    (port,) = free_ports(1)
    code, _, err = run_cli(
        monkeypatch, capsys, "stream", "--source", digit_folder,
        "--backend", f"triton://127.0.0.1:{port}/mean_global",
    )  # fmt: skip
    assert_one_line_error(code, err, "unreachable", f"127.0.0.1:{port}")


def test_bench_times_the_servers_model(triton, monkeypatch, capsys, tmp_path) -> None:
    server, _, models = triton
    out = tmp_path / "bench.json"
    code, text, err = run_cli(
        monkeypatch, capsys, "bench", "--backend", server.address(models["two"], "grpc"),
        "--batch", "1,16", "--seconds", "0.2", "--json", out,
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["backend"].endswith("(Triton server)")
    # both stages of the two-stage model, at both sizes (16 rows: requests of max_batch_size)
    assert [(r["stage"], r["batch"]) for r in result["rows"]] == [
        ("global", 1), ("global", 16), ("local", 1), ("local", 16),
    ]  # fmt: skip
    assert all(r["runs"] >= 1 for r in result["rows"]) and "Triton server" in text


def test_bench_refuses_a_model_with_a_triton_backend(monkeypatch, capsys, mean_bundle) -> None:
    code, _, err = run_cli(
        monkeypatch, capsys, "bench", "--backend", "triton://127.0.0.1:1/m",
        "--model", mean_bundle,
    )  # fmt: skip
    assert_one_line_error(code, err, "--model with a triton backend")


def test_serve_runs_a_camera_on_a_triton_model(triton, tmp_path, digit_folder) -> None:
    """A camera of the service on the tiled model served by Triton (gRPC): its per-frame
    log holds local ONNX Runtime's scores, and the model reports its Triton address."""
    from adedge.runtime.serve.config import parse_config
    from adedge.runtime.serve.service import Service

    server, bundles, models = triton
    address = server.address(models["tiles"], "grpc")
    log = tmp_path / "cam.jsonl"
    config = parse_config(
        {
            "models": {"line": {"backend": address, "max_delay_ms": 2}},
            "cameras": {"cam": {"source": str(digit_folder), "model": "line", "jsonl": str(log)}},
            "api": {"enabled": False},
            "storage": {"path": str(tmp_path / "store")},
        }
    )
    lines: list[str] = []
    service = Service(config, lines.append)
    service.start()
    frames = sorted(digit_folder.glob("*.png"))
    try:
        deadline = time.monotonic() + 60  # a bound, never a measured time
        while not log.is_file() or len(frame_records(log)) < len(frames):
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        (info,) = service.models.stats({"cam": "line"})
        assert info.bundle == address and info.backend == address
    finally:
        service.stop()
    local = Detector(bundles["tiles"], threads=1)
    expected = [f.score for f in local.score_frames([cv2.imread(str(p)) for p in frames])]
    assert [r["score"] for r in frame_records(log)] == pytest.approx(expected, abs=TOLERANCE)


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ({"backend": "triton://h/m_global", "bundle": "b"}, "add fallback: local"),
        ({"backend": "triton://h/m_global", "fallback": "local"}, "fallback: local needs"),
        ({"backend": "triton://h/m_global", "precision": "fp16"}, "precision"),
        ({"backend": "onnxruntime", "bundle": "b", "fallback": "local"}, "only a triton"),
        (
            {"backend": "triton://h/m_global", "bundle": "b", "fallback": "local", "watch": True},
            "watch: true is for Triton models without a fallback",
        ),
        ({"backend": "onnxruntime"}, "bundle folder is required"),
    ],
)
def test_serve_config_of_triton_models(model, words) -> None:
    from adedge.runtime.serve.config import ConfigError, parse_config

    data = {"models": {"line": model}, "cameras": {"c": {"source": "synthetic", "model": "line"}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    line = caught.value.one_line()
    assert "models.line" in line and words in line and "\n" not in line


def test_serve_check_accepts_a_triton_model_without_bundle(monkeypatch, capsys) -> None:
    code, out, err = run_cli(
        monkeypatch, capsys, "serve", "--source", "synthetic", "--backend",
        "triton://triton-a:8001/line_global", "--check",
    )  # fmt: skip
    assert code == 0, err
    model = json.loads(out)["models"]["model"]
    assert model["backend"] == "triton://triton-a:8001/line_global" and model["bundle"] is None
    assert model["fallback"] == "none"


def test_api_refuses_to_swap_a_bundle_into_a_triton_model(triton, tmp_path) -> None:
    from adedge.runtime.serve.api_types import Refused
    from adedge.runtime.serve.config import parse_config
    from adedge.runtime.serve.service import Service

    server, bundles, models = triton
    config = parse_config(
        {
            "models": {"line": {"backend": server.address(models["mean"], "grpc")}},
            "cameras": {"cam": {"source": "synthetic:frames=5", "model": "line"}},
            "api": {"enabled": False},
            "storage": {"path": str(tmp_path / "store")},
        }
    )
    service = Service(config, lambda line: None)
    service.start()
    try:
        with pytest.raises(Refused, match="runs on Triton"):
            service.models.swap("line", bundles["mean"])
    finally:
        service.stop()
