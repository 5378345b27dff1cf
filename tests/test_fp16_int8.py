"""FP16 graphs (mixed precision with FP32 islands), the FP16 lint, INT8 graphs, and their
parity checks in the export (DESIGN §4-§5). No GPU: ONNX Runtime's CPU provider runs both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from adedge.bundle import CARD_NAME, load_bundle, parse_card
from adedge.errors import AdedgeError, BundleError, ExportError
from adedge.export import fp16 as fp16_graph
from adedge.export import int8 as int8_graph
from adedge.export.fp16 import (
    FP16,
    FP32,
    Fp16Policy,
    convert_to_mixed_fp16,
    emulate_fp16,
    lint_fp16,
    node_precisions,
    spearman,
)
from adedge.runtime.backends import create_backend, parse_backend
from adedge.runtime.detector import Detector

RNG = np.random.default_rng(0)


# --- small graphs built with onnx.helper ---------------------------------------------------


def make_model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def tensor(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def run(model: onnx.ModelProto, **feeds) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def recon_model(size: int = 64) -> onnx.ModelProto:
    """A tiny auto-encoder score: a gated conv 'decoder', L1 over the image (12288 values per
    score), a channel-mean amap, and a Gaussian exp() term."""
    weight = RNG.normal(0, 0.2, (3, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("ReduceMean", ["r1"], ["chan"], name="inner_mean", axes=[1]),
        helper.make_node("Mul", ["r1", "chan"], ["gated"], name="gate"),
        helper.make_node("Conv", ["gated", "w"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Tanh", ["c2"], ["recon"], name="tanh"),
        helper.make_node("Sub", ["image", "recon"], ["diff"], name="sub"),
        helper.make_node("Abs", ["diff"], ["err"], name="abs"),
        helper.make_node("ReduceMean", ["err"], ["l1"], name="l1", axes=[1, 2, 3], keepdims=0),
        helper.make_node("ReduceMean", ["err"], ["amap"], name="amap", axes=[1], keepdims=1),
        helper.make_node("Neg", ["l1"], ["neg"], name="neg"),
        helper.make_node("Exp", ["neg"], ["gauss"], name="exp"),
        helper.make_node("Mul", ["gauss", "half"], ["half_gauss"], name="scale"),
        helper.make_node("Add", ["l1", "half_gauss"], ["score"], name="score"),
    ]
    return make_model(
        nodes,
        [tensor("image", FP32, ["N", 3, size, size])],
        [tensor("score", FP32, ["N"]), tensor("amap", FP32, ["N", 1, size, size])],
        [
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        ],
    )


def test_policy_keeps_networks_fp16_and_score_math_fp32():
    precision = node_precisions(recon_model(), Fp16Policy())
    # the networks: convolutions and what lies between them, including a small reduction
    # (a mean over 3 channels) inside the network
    for name in ("conv1", "relu1", "inner_mean", "gate", "conv2"):
        assert precision[name] == FP16, name
    # the image-sized L1 mean (12288 values), exp, and everything writing an output: FP32
    for name in ("l1", "exp", "neg", "scale", "score", "amap"):
        assert precision[name] == FP32, name
    # score math after the last heavy op is pulled into FP32: |x - recon| and the Tanh
    assert precision["sub"] == precision["abs"] == precision["tanh"] == FP32


def test_converted_graph_types_casts_and_parity():
    model = recon_model()
    converted, report = convert_to_mixed_fp16(model)
    graph = converted.graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [FP32]
    assert {o.type.tensor_type.elem_type for o in graph.output} == {FP32}
    inits = {i.name: i.data_type for i in graph.initializer}
    assert {inits[n.input[1]] for n in graph.node if n.op_type == "Conv"} == {FP16}
    assert inits["half"] == FP32 and "half_fp16" not in inits  # read by an FP32 node only
    assert "w" not in inits  # read by FP16 convs only: the FP32 original is dropped
    casts = [(n.input[0], n.attribute[0].i) for n in graph.node if n.op_type == "Cast"]
    # the image into conv1, conv2's output into the FP32 score math: two Casts
    assert sorted(casts) == [("c2", FP32), ("image", FP16)] and report.casts == 2
    assert report.fp16_nodes == 5 and "l1" in report.fp32_nodes
    image = RNG.uniform(-1, 1, (4, 3, 64, 64)).astype(np.float32)
    reference, converted_out = run(model, image=image), run(converted, image=image)
    for a, b in zip(reference, converted_out, strict=True):
        assert b.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=0, atol=5e-3)
    assert lint_fp16(converted) == []


def test_lint_reports_fp16_reductions_over_thousands_only():
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["big"], name="img_mean", axes=[1, 2, 3]),
        helper.make_node("ReduceSum", ["x", "axis1"], ["small"], name="chan_sum"),
        helper.make_node("ReduceMax", ["x"], ["peak"], name="img_max", axes=[1, 2, 3]),
        helper.make_node("GlobalAveragePool", ["x"], ["gap"], name="gap"),
    ]
    naive = make_model(
        nodes,
        [tensor("x", FP16, ["N", 3, 64, 64])],
        [
            tensor("big", FP16, ["N", 1, 1, 1]),
            tensor("small", FP16, ["N", 1, 64, 64]),
            tensor("peak", FP16, ["N", 1, 1, 1]),
            tensor("gap", FP16, ["N", 3, 1, 1]),
        ],
        [numpy_helper.from_array(np.array([1], np.int64), "axis1")],
    )
    findings = lint_fp16(naive)
    # 3x64x64 = 12288 and 64x64 = 4096 (not more than the limit): only the image mean;
    # max is exact in any precision, the channel sum covers 3 values
    assert [(f.node, f.elements) for f in findings] == [("img_mean", 12288)]
    assert [f.node for f in lint_fp16(naive, limit=1000)] == ["img_mean", "gap"]
    assert "img_mean (ReduceMean) reduces 12288 elements in FP16" in findings[0].describe()


def energy_model(fp16_sum: bool) -> onnx.ModelProto:
    """conv (FP16 in a mixed graph) -> sum of squares over 32x32 -> sqrt: with x = 1 and
    w = 10 the sum is 102400 > 65504, inf if it is held in FP16."""
    if fp16_sum:  # a naive mixed graph: the sum's result is an FP16 tensor
        nodes = [
            helper.make_node("Cast", ["x"], ["x16"], to=FP16),
            helper.make_node("Cast", ["w"], ["w16"], to=FP16),
            helper.make_node("Conv", ["x16", "w16"], ["feat"]),
            helper.make_node("ReduceSumSquare", ["feat"], ["energy"], axes=[1, 2, 3]),
            helper.make_node("Cast", ["energy"], ["energy32"], to=FP32),
            helper.make_node("Sqrt", ["energy32"], ["score"]),
        ]
    else:
        nodes = [
            helper.make_node("Conv", ["x", "w"], ["feat"], name="conv"),
            helper.make_node("ReduceSumSquare", ["feat"], ["energy"], name="sum", axes=[1, 2, 3]),
            helper.make_node("Sqrt", ["energy"], ["score"], name="sqrt"),
        ]
    return make_model(
        nodes,
        [tensor("x", FP32, ["N", 1, 32, 32])],
        [tensor("score", FP32, ["N", 1, 1, 1])],
        [numpy_helper.from_array(np.full((1, 1, 1, 1), 10.0, np.float32), "w")],
    )


def test_fp32_island_prevents_the_fp16_overflow_of_a_sum():
    x = np.ones((2, 1, 32, 32), np.float32)
    converted, _ = convert_to_mixed_fp16(energy_model(fp16_sum=False))
    assert [n.op_type for n in converted.graph.node] == [
        "Cast",
        "Conv",
        "Cast",
        *["ReduceSumSquare", "Sqrt"],
    ]
    for graph in (converted, emulate_fp16(converted)):
        np.testing.assert_allclose(run(graph, x=x)[0], 320.0, rtol=1e-3)
    # without the island the FP16 sum overflows: the emulation shows it (inf), while ONNX
    # Runtime's CPU provider silently computes it in FP32: why export checks both
    naive = energy_model(fp16_sum=True)
    assert np.isinf(run(emulate_fp16(naive), x=x)[0]).all()
    np.testing.assert_allclose(run(naive, x=x)[0], 320.0, rtol=1e-3)


def test_emulation_rounds_every_fp16_tensor():
    model = recon_model()
    converted, _ = convert_to_mixed_fp16(model)
    emulated = emulate_fp16(converted)
    assert {i.data_type for i in emulated.graph.initializer} == {FP32}
    pairs = [n for n in emulated.graph.node if n.op_type == "Cast" and n.attribute[0].i == FP16]
    # conv1, relu1, inner_mean, gate, conv2 and the Cast of the image into conv1
    assert len(pairs) == 6
    image = RNG.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    expected = run(model, image=image)
    for a, b in zip(expected, run(emulated, image=image), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=5e-3)


ONE = helper.make_tensor("v", FP32, [1], [1.0])


def test_resize_scales_and_constants_keep_legal_types():
    """Resize's scales stay FP32 (the schema says so); Constant and ConstantOfShape values
    follow their node's precision; an initializer read by both precisions gets both."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Constant", [], ["k"], name="k", value_float=2.0),
        helper.make_node("Mul", ["c", "k"], ["ck"], name="mul"),
        helper.make_node("Resize", ["ck", "", "scales"], ["up"], name="up", mode="nearest"),
        helper.make_node("Conv", ["up", "w"], ["c2"], name="conv2"),
        helper.make_node("Shape", ["c2"], ["shape"], name="shape"),
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["ones"],
            name="ones",
            value=helper.make_tensor("v", FP32, [1], [1.0]),
        ),
        helper.make_node("Add", ["c2", "ones"], ["c3"], name="add"),
        helper.make_node("Conv", ["c3", "w"], ["c4"], name="conv3"),
        helper.make_node("Mul", ["c4", "k"], ["c5"], name="mul_out"),
        helper.make_node("ReduceMean", ["c5"], ["score"], name="mean", axes=[1, 2, 3], keepdims=0),
    ]
    model = make_model(
        nodes,
        [tensor("x", FP32, ["N", 1, 8, 8])],
        [tensor("score", FP32, ["N"])],
        [
            numpy_helper.from_array(np.full((1, 1, 1, 1), 0.5, np.float32), "w"),
            numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        ],
    )
    converted, _ = convert_to_mixed_fp16(model)
    inits = {i.name: i.data_type for i in converted.graph.initializer}
    assert inits["scales"] == FP32 and inits["k"] == FP32 and inits["k_fp16"] == FP16
    fill = next(n for n in converted.graph.node if n.op_type == "ConstantOfShape")
    assert fill.attribute[0].t.data_type == FP16
    x = RNG.uniform(-1, 1, (3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(converted, x=x)[0], run(model, x=x)[0], rtol=2e-3, atol=2e-3)


def test_control_flow_is_refused_with_a_clear_error():
    branch = helper.make_graph([], "b", [], [tensor("x", FP32, [1])])
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        helper.make_node("Greater", ["m", "zero"], ["flag"]),
        helper.make_node(
            "If", ["flag"], ["y"], name="branch", then_branch=branch, else_branch=branch
        ),
    ]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "g",
            [tensor("x", FP32, [1])],
            [tensor("y", FP32, [1])],
            [numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    with pytest.raises(ExportError, match="If node .*branch.*control flow"):
        convert_to_mixed_fp16(model)


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    a = RNG.integers(0, 20, 500).astype(float)  # many ties
    b = a + RNG.normal(0, 3, 500)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(np.ones(5), np.ones(5)) == 1.0
    assert spearman(np.ones(5), np.arange(5)) == 0.0
    assert np.isnan(spearman(np.array([1.0, np.inf]), np.array([1.0, 2.0])))


# --- the exported Y-GAN bundle -----------------------------------------------------------------


def test_ygan_bundle_has_a_checked_fp16_graph(ygan_bundle):
    bundle = load_bundle(ygan_bundle)
    stage = bundle.card.stages[0]
    assert stage.fp16_file == "global.fp16.onnx"
    path = bundle.graph_file(stage, "fp16")
    model = onnx.load(str(path))
    inits = {i.name: i.data_type for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert convs and all(inits[n.input[1]] == FP16 for n in convs)
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    feeder = next(n for n in model.graph.node if softmax.input[0] in n.output)
    assert feeder.op_type == "Cast" and feeder.attribute[0].i == FP32  # softmax in FP32
    check = bundle.card.metrics["precision"]["fp16"]
    score = check["stages"]["global"]["outputs"]["score"]
    assert score["spearman"] >= 0.999 and score["values"] > 100
    assert abs(check["delta_auroc"]) <= 0.005
    assert check["stages"]["global"]["conversion"]["fp32_island_nodes"]
    assert stage.engine is not None and stage.engine.precision == "fp32"  # no --half


def test_fp16_backend_runs_on_cpu_and_agrees(ygan_bundle, digit_frames):
    fp32 = Detector(ygan_bundle)
    fp16 = Detector(ygan_bundle, backend="onnxruntime:fp16")
    a = np.array([r.score for r in fp32.score_frames(digit_frames)])
    b = np.array([r.score for r in fp16.score_frames(digit_frames)])
    assert np.abs(a - b).max() < 1e-3 and spearman(a, b) > 0.99
    assert fp16.backend_name == "onnxruntime:fp16"


def test_old_cards_load_and_say_to_reexport_for_fp16(ygan_bundle, tmp_path):
    data = json.loads((ygan_bundle / CARD_NAME).read_text())
    for key in ("fp16_file", "fp16_sha256", "int8_file", "int8_sha256", "engine"):
        data["stages"]["global"].pop(key, None)
    old = tmp_path / "old"
    old.mkdir()
    (old / CARD_NAME).write_text(json.dumps(data))
    (old / "global.onnx").write_bytes((ygan_bundle / "global.onnx").read_bytes())
    card = parse_card(data)
    assert card.stages[0].fp16_file is None and card.stages[0].engine is None
    assert Detector(old).score_images([np.zeros((8, 8), np.uint8)])[0].shape == (1,)
    with pytest.raises(BundleError, match="no FP16 graph for stage 'global'") as caught:
        Detector(old, backend="onnxruntime:fp16")
    assert "re-export" in caught.value.hint
    with pytest.raises(BundleError, match="no INT8 graph") as caught:
        Detector(old, backend="onnxruntime:int8")
    assert "--int8" in caught.value.hint


def test_card_engine_field_is_validated(ygan_bundle):
    data = json.loads((ygan_bundle / CARD_NAME).read_text())
    data["stages"]["global"]["engine"] = {"precision": "int4", "max_batch": 8}
    with pytest.raises(BundleError, match="stages.global.engine.precision"):
        parse_card(data)
    data["stages"]["global"]["engine"] = {"precision": "fp16", "max_batch": 2, "opt_batch": 4}
    with pytest.raises(BundleError, match="stages.global.engine.opt_batch"):
        parse_card(data)


def test_tampered_fp16_graph_is_caught(ygan_bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(ygan_bundle, copy)
    with open(copy / "global.fp16.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="does not match the sha256"):
        Detector(copy, backend="onnxruntime:fp16")


def test_backend_names_parse():
    assert parse_backend("onnxruntime") == ("onnxruntime", None)
    assert parse_backend("ONNXRuntime:INT8") == ("onnxruntime", "int8")
    assert parse_backend("tensorrt:fp16") == ("tensorrt", "fp16")
    with pytest.raises(AdedgeError, match="no precision 'int8'") as caught:
        parse_backend("tensorrt:int8")
    assert "tensorrt:fp16" in caught.value.hint
    with pytest.raises(AdedgeError, match="unknown backend 'cuda'"):
        parse_backend("cuda")


def break_fp16_score(original):
    """Wrap write_fp16 so the written graph's score comes out negated (rank order reversed)."""

    def broken(source: Path, target: Path, policy=Fp16Policy()):
        result = original(source, target, policy)
        model = onnx.load(str(target))
        producer = next(n for n in model.graph.node if "score" in n.output)
        producer.output[list(producer.output).index("score")] = "score_raw"
        model.graph.node.append(helper.make_node("Neg", ["score_raw"], ["score"]))
        onnx.save(model, str(target))
        return result

    return broken


def test_export_fails_loudly_naming_method_and_output(trained_run, tmp_path, monkeypatch):
    from adedge.export.onnx_export import ExportOptions, export_bundle

    monkeypatch.setattr(fp16_graph, "write_fp16", break_fp16_score(fp16_graph.write_fp16))
    out = tmp_path / "model"
    with pytest.raises(ExportError, match="FP16 parity failed for ygan stage 'global': output "):
        export_bundle(ExportOptions(trained_run, out), log=lambda _: None)
    assert not out.exists()


# --- INT8 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_bundle(trained_run, tmp_path_factory) -> Path:
    from adedge.export.onnx_export import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("int8") / "ygan-int8"
    export_bundle(ExportOptions(trained_run, out, int8=True, half=True), log=lambda _: None)
    return out


def test_int8_graph_is_quantised_outside_the_islands(int8_bundle):
    bundle = load_bundle(int8_bundle)
    stage = bundle.card.stages[0]
    model = onnx.load(str(bundle.graph_file(stage, "int8")))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 4 and "DequantizeLinear" in ops
    produced_by = {out: n for n in model.graph.node for out in n.output}
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    assert produced_by[softmax.input[0]].op_type != "DequantizeLinear"  # island stays float
    entry = bundle.card.metrics["precision"]["int8"]
    assert entry["stages"]["global"]["conversion"]["calibration_inputs"] > 100
    assert entry["stages"]["global"]["outputs"]["score"]["spearman"] > 0.95
    assert entry["delta_auroc"] >= -int8_graph.MAX_AUROC_DROP
    assert stage.engine.precision == "fp16"  # --half


def test_int8_backend_scores_like_fp32(int8_bundle):
    from adedge.data import load
    from adedge.runtime.evaluate import evaluate

    data = load("digits:anomaly=0")
    fp32 = evaluate(Detector(int8_bundle), data)
    int8 = evaluate(Detector(int8_bundle, backend="onnxruntime:int8"), data)
    assert int8["backend"] == "onnxruntime:int8"
    assert abs(int8["auroc"] - fp32["auroc"]) <= 0.01


def test_int8_graph_losing_auroc_is_refused(trained_run, tmp_path, monkeypatch):
    from adedge.export.onnx_export import ExportOptions, export_bundle

    monkeypatch.setattr(int8_graph, "MAX_AUROC_DROP", -1.0)  # any INT8 graph now "loses"
    out = tmp_path / "model"
    with pytest.raises(ExportError, match="INT8 graph of ygan loses .* AUROC.*not written"):
        export_bundle(ExportOptions(trained_run, out, int8=True), log=lambda _: None)
    assert not out.exists()


def test_check_auroc_drop_limits_drops_not_gains():
    int8_graph.check_auroc_drop("ygan", 0.90, 0.895, 0.01)
    int8_graph.check_auroc_drop("ygan", 0.90, 0.95, 0.01)  # a gain is reported, not refused
    with pytest.raises(ExportError, match="loses 0.02000 test AUROC"):
        int8_graph.check_auroc_drop("ygan", 0.90, 0.88, 0.01)


def test_calibration_reader_feeds_every_input_in_batches():
    inputs = RNG.normal(size=(70, 1, 4, 4)).astype(np.float32)
    reader = int8_graph.calibration_reader("image", inputs, batch=32)
    batches = []
    while (item := reader.get_next()) is not None:
        batches.append(item["image"])
    assert [len(b) for b in batches] == [32, 32, 6]
    np.testing.assert_array_equal(np.concatenate(batches), inputs)
    reader.rewind()
    assert reader.get_next()["image"].shape == (32, 1, 4, 4)


def test_int8_backend_runs_through_create_backend(int8_bundle):
    bundle = load_bundle(int8_bundle)
    stage = bundle.card.stages[0]
    backend = create_backend("onnxruntime:int8", bundle.stage_file(stage), stage)
    out = backend.run(np.zeros((3, 1, 32, 32), np.float32))["score"]
    assert out.shape == (3,) and np.isfinite(out).all()


def test_heatmaps_are_held_to_a_looser_rank_rule_than_scores():
    from adedge.export.fp16 import OutputParity, parity_failed, worst_output

    near = OutputParity(spearman=0.995, max_abs_diff=0.1, values=100)
    good = OutputParity(spearman=0.9999, max_abs_diff=1e-4, values=100)
    assert not parity_failed({"score": good, "amap": near})
    assert parity_failed({"score": near, "amap": good})
    failing_map = OutputParity(0.98, 0.3, 100)
    assert parity_failed({"score": good, "amap": failing_map})
    assert worst_output({"score": good, "amap": failing_map}) == "amap"
