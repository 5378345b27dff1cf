"""`adedge bench`: a bundle on each backend, and `--papers`, the papers' cases side by side."""

from __future__ import annotations

import json

import pytest
from cli_helpers import assert_one_line_error, run_cli

from adedge.paths import find_vtest


def test_bench_times_the_fp16_graph(monkeypatch, capsys, ygan_bundle, tmp_path):
    out = tmp_path / "b.json"
    code, stdout, err = run_cli(
        monkeypatch,
        capsys,
        *("bench", "--model", ygan_bundle, "--batch", "2", "--seconds", 0.05),
        *("--backend", "onnxruntime:fp16", "--json", out),
    )
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["backend"] == "onnxruntime:fp16 (CPU)"
    assert [row["batch"] for row in result["rows"]] == [2]
    assert "onnxruntime:fp16" in stdout


def test_bench_on_tensorrt_without_a_gpu_is_one_line(monkeypatch, capsys, ygan_bundle):
    code, _, err = run_cli(
        monkeypatch, capsys, "bench", "--model", ygan_bundle, "--backend", "tensorrt"
    )
    assert_one_line_error(code, err, "TensorRT")


def test_bench_papers_writes_the_report(monkeypatch, capsys, tmp_path):
    report = tmp_path / "results" / "papers"
    code, stdout, err = run_cli(
        monkeypatch,
        capsys,
        *("bench", "--papers", "--cases", "ygan 32x32", "--seconds", 0.05),
        *("--threads", 1, "--report", report),
    )
    assert code == 0, err
    results = json.loads(report.with_suffix(".json").read_text())
    (case,) = results["cases"]
    assert case["method"] == "ygan" and case["stages"][0]["input"] == [1, 32, 32]
    backends = case["backends"]
    assert {"torch eager, full model", "torch eager, pruned", "onnxruntime:fp32"} <= set(backends)
    assert {"onnxruntime:fp16", "onnxruntime:int8"} <= set(backends)
    # the full model runs E_r and the decoder twice on top of the pruned E_s + C
    assert case["full_model_gflops_per_frame"] > 2 * case["gflops_per_frame"] > 0
    for measured in backends.values():
        assert 0 < measured["ms_per_frame_p50"] <= measured["ms_per_frame_p95"]
        assert measured["best_batch_frames"] in (1, 8, 32)
    assert case["papers"][0]["ms"] == 2.6 and "2080 Ti" in case["papers"][0]["hardware"]
    if find_vtest() is not None:
        assert case["stream_vtest"]["frames"] >= 5
    markdown = report.with_suffix(".md").read_text()
    assert "| ygan 32x32 grey |" in markdown
    assert "| Y-GAN, 32x32 (batch 64, includes E_r + decoder) | 2.6 | RTX 2080 Ti |" in markdown
    for png in (report.with_suffix(".png"), report.with_name("papers-roofline.png")):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "torch eager, full model" in stdout and "INT8 GEMM" in stdout
    # each row against its own roof: INT8 against the INT8 GEMM, the full model (no byte
    # count) against the FP32 compute peak; the INT8 graph moves fewer bytes than FP32
    roofs = results["roofs"]
    assert roofs["int8_gops"] > 0 and roofs["memory_gbs"] > 0
    int8, fp32 = backends["onnxruntime:int8"], backends["onnxruntime:fp32"]
    assert int8["roof_gflops"] <= roofs["int8_gops"] and int8["precision"] == "int8"
    assert fp32["roof_gflops"] <= roofs["fp32_gflops"] and fp32["precision"] == "fp32"
    assert backends["torch eager, full model"]["roof_gflops"] == roofs["fp32_gflops"]
    assert case["bytes_per_frame"]["int8"] < case["bytes_per_frame"]["fp32"]
    for measured in backends.values():
        reached = measured["gflops_per_second"] / measured["roof_gflops"]
        assert measured["fraction_of_roof"] == pytest.approx(reached)
    fusion = case["int8_fusion"]["global"]
    assert fusion["fused_convolutions"] == fusion["quantised_convolutions"] > 0
    assert "## INT8 convolutions ONNX Runtime fuses into integer kernels" in markdown


def test_bench_papers_names_the_cases_when_none_matches(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "bench", "--papers", "--cases", "resnet")
    assert_one_line_error(code, err, "no benchmark case matches 'resnet'", "ygan 32x32 grey")


def test_bench_papers_rejects_a_missing_video(monkeypatch, capsys, tmp_path):
    video = tmp_path / "nope.avi"
    code, _, err = run_cli(monkeypatch, capsys, "bench", "--papers", "--video", video)
    assert_one_line_error(code, err, "--video", "nope.avi")
