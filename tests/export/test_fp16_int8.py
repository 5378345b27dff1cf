"""FP16 graphs (mixed precision with FP32 islands), the FP16 lint, INT8 graphs, and their
parity checks in the export: a lower-precision graph ships only if it changes no frame's
decision that FP32 would make. No GPU: ONNX Runtime's CPU provider runs both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from bundles import onnx_model, tensor, write_bundle
from onnx import helper, numpy_helper

from adedge.bundle import CARD_NAME, load_bundle, parse_card
from adedge.errors import AdedgeError, BundleError, ExportError
from adedge.export import fp16_checks, parity
from adedge.export import int8 as int8_graph
from adedge.export.fp16 import FP16, FP32, Fp16Policy, convert_to_mixed_fp16, node_precisions
from adedge.export.fp16_checks import emulate_fp16, lint_fp16
from adedge.export.int8_layers import float_nodes
from adedge.export.parity import spearman
from adedge.runtime.backends import create_backend, parse_backend
from adedge.runtime.detector import Detector

RNG = np.random.default_rng(0)


# --- small graphs built with onnx.helper ---------------------------------------------------


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
    return onnx_model(
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
    naive = onnx_model(
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
    return onnx_model(
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
    model = onnx_model(
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
    assert stage.graph("fp16").file == "global.fp16.onnx"
    path = bundle.graph_file(stage, "fp16")
    model = onnx.load(str(path))
    inits = {i.name: i.data_type for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert convs and all(inits[n.input[1]] == FP16 for n in convs)
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    feeder = next(n for n in model.graph.node if softmax.input[0] in n.output)
    assert feeder.op_type == "Cast" and feeder.attribute[0].i == FP32  # softmax in FP32
    for variant in ("fp16", "fp16_emulated"):  # the card says what was checked, and how
        check = bundle.card.metrics["precision"][variant]
        assert check["rule"] == parity.FP16_RULE
        score = check["stages"]["global"]["outputs"]["score"]
        assert score["passed"] and score["values"] > 100 and score["spread"] > 0
        ratio = score["p99_abs_diff_over_spread"]
        assert ratio == pytest.approx(score["p99_abs_diff"] / score["spread"])
        assert ratio <= score["p99_abs_diff_over_spread_limit"] == parity.MAX_SCORE_DIFF
        assert score["p99_abs_diff"] <= score["max_abs_diff"]
        ranked = score["spread"] >= score["values"] * 2.0**-10 * score["max_abs_fp32_value"]
        assert score["spread_enough_for_rho"] == ranked
        assert score["spearman_limit"] == (parity.MIN_SPEARMAN if ranked else None)
        assert abs(check["delta_auroc"]) <= parity.MAX_AUROC_DELTA
    assert check["stages"]["global"]["inputs"] > 100
    fp16 = bundle.card.metrics["precision"]["fp16"]["stages"]["global"]
    assert fp16["conversion"]["fp32_island_nodes"]
    assert stage.engine is not None and stage.engine.precision == "fp32"  # no --half


def test_fp16_backend_runs_on_cpu_and_agrees(ygan_bundle, digit_frames):
    fp32 = Detector(ygan_bundle)
    fp16 = Detector(ygan_bundle, backend="onnxruntime:fp16")
    a = np.array([r.score for r in fp32.score_frames(digit_frames)])
    b = np.array([r.score for r in fp16.score_frames(digit_frames)])
    # Y-GAN's score lies in [0, 1]: FP16 weights move it by ~1e-4 (the card's parity), far
    # below this bound (no rank test: 24 scores of a 2-epoch model may nearly tie)
    assert np.isfinite(b).all() and np.abs(a - b).max() < 1e-3
    assert fp16.backend_name == "onnxruntime:fp16"


def test_old_cards_load_and_say_to_reexport_for_fp16(ygan_bundle, tmp_path):
    data = json.loads((ygan_bundle / CARD_NAME).read_text())
    for precision in ("fp16", "int8"):
        data["stages"]["global"]["graphs"].pop(precision, None)
    data["stages"]["global"].pop("engine", None)
    old = tmp_path / "old"
    old.mkdir()
    (old / CARD_NAME).write_text(json.dumps(data))
    (old / "global.onnx").write_bytes((ygan_bundle / "global.onnx").read_bytes())
    card = parse_card(data)
    assert card.stages[0].graph("fp16") is None and card.stages[0].engine is None
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
    assert parse_backend("onnxruntime")[:2] == ("onnxruntime", None)
    assert parse_backend("ONNXRuntime:INT8")[:2] == ("onnxruntime", "int8")
    assert parse_backend("tensorrt:fp16")[:2] == ("tensorrt", "fp16")
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
    """Y-GAN's scores (1 - max softmax) are >= 0, so negating them makes p99 |Δ| = 2 p99 >=
    2 (p99 - p1): 200% of the spread or more, whatever the model (the limit is 5%)."""
    from adedge.export.bundle_writer import export_bundle
    from adedge.export.options import ExportOptions

    monkeypatch.setattr(fp16_checks, "write_fp16", break_fp16_score(fp16_checks.write_fp16))
    out = tmp_path / "model"
    with pytest.raises(ExportError, match="FP16 parity failed for ygan stage 'global'") as caught:
        export_bundle(ExportOptions(trained_run, out), log=lambda _: None)
    line = caught.value.one_line()
    assert "output 'score' moves by" in line and "of the FP32 values' spread" in line
    assert "--precisions fp32" in line and "train longer" in line and "\n" not in line
    assert not out.exists()


# --- the FP16 rule on constructed outputs ------------------------------------------------------


def test_nearly_tied_scores_with_tiny_differences_pass_where_rho_refused():
    """A 1-epoch model's scores: most tied in a band 5e-5 wide (a barely trained
    model scores most images alike), a few spread over [0.8, 0.9]. FP16 moves each by 1e-6:
    the tied ones swap among ~10 neighbours and rho falls below 0.999 (the old rule
    refused), yet 1e-6 is 0.0015% of the spread, and no threshold tells the tied scores
    apart: the new rule passes."""
    fp32 = np.r_[0.86 + 1e-7 * np.arange(480), np.linspace(0.80, 0.90, 32)]
    fp16 = fp32 + 1e-6 * (-1.0) ** np.arange(512)
    assert spearman(fp32, fp16) < parity.MIN_SPEARMAN  # what the old rule measured
    checked = parity.compare_output(fp32, fp16)
    assert checked.max_abs_diff == pytest.approx(1e-6)
    assert checked.spread == pytest.approx(np.quantile(fp32, 0.99) - np.quantile(fp32, 0.01))
    assert checked.over_spread(checked.max_abs_diff) < 1e-4
    assert not checked.ranked  # spread 0.067 < 512 values x one FP16 step at 0.9 (0.45)
    assert parity.fp16_failures({"score": checked}) == {}
    verdict = parity.fp16_verdict("score", checked)
    assert verdict["passed"] and verdict["spearman_limit"] is None


def test_scores_that_really_move_are_refused():
    fp32 = np.linspace(0.0, 1.0, 512)  # spread 0.98, ranked: 0.98 >= 512 x 2^-10 x 1.0
    assert parity.compare_output(fp32, fp32).ranked
    shifted = fp32 + 0.06 * (fp32 > 0.5)  # 6% of the spread on half the scores: refused
    why = parity.fp16_failures({"score": parity.compare_output(fp32, shifted)})
    assert list(why) == ["score"] and "6.12% of the FP32 values' spread" in why["score"]
    assert "limit 5%" in why["score"] and "(p99 |Δ|; max 0.06)" in why["score"]
    # within 5% of the spread (1.9%), but spread scores shuffled among ~10 neighbours: rho
    # applies to spread scores, and refuses
    jitter = fp32 + 0.0186 * (-1.0) ** np.arange(512)
    checked = parity.compare_output(fp32, jitter)
    assert checked.relative_diff < parity.MAX_SCORE_DIFF
    assert checked.spearman < parity.MIN_SPEARMAN
    assert "Spearman rho" in parity.fp16_failure("score", checked)
    broken = fp32.copy()
    broken[7] = np.inf  # an FP16 overflow, on one input
    why = parity.fp16_failure("score", parity.compare_output(fp32, broken))
    assert why == "is not finite in the FP16 graph (an FP16 overflow)"


def test_constant_scores_pass_only_if_unmoved():
    flat = np.full(64, 0.25)
    assert parity.fp16_failure("score", parity.compare_output(flat, flat)) is None
    moved = parity.compare_output(flat, flat + 1e-7)
    assert moved.spread == 0 and moved.relative_diff == np.inf
    assert "of the FP32 values' spread 0 " in parity.fp16_failure("score", moved)
    mostly_tied = np.r_[np.zeros(200), [0.5, 0.7]]  # p99 - p1 = 0: max - min instead
    assert parity.value_spread(mostly_tied) == pytest.approx(0.7)


def test_one_value_in_a_hundred_may_round_badly_most_may_not():
    rng = np.random.default_rng(3)
    fp32 = rng.uniform(0.0, 1.0, 100_000)  # spread 0.98
    few = fp32.copy()
    few[:500] += 0.3  # 0.5% of the values move by 30% of the spread: p99 |Δ| is 0
    checked = parity.compare_output(fp32, few)
    assert checked.max_abs_diff == pytest.approx(0.3) and checked.p99_abs_diff == 0
    assert parity.fp16_failures({"score": checked, "amap": checked}) == {}
    # every value moves by 7% of the spread: too much for a score (5%), not a heatmap (10%)
    most = parity.compare_output(fp32, fp32 + 0.07 * 0.98)
    assert parity.fp16_failure("amap", most) is None
    assert "limit 5%" in parity.fp16_failure("score", most)
    many = parity.compare_output(fp32, fp32 + 0.12 * (np.arange(fp32.size) % 2))
    assert "limit 10%" in parity.fp16_failure("amap", many)


def test_worst_output_names_a_failing_output_first():
    good = parity.compare_output(np.linspace(0, 1, 100), np.linspace(0, 1, 100))
    bad_map = parity.compare_output(np.linspace(0, 1, 5000), np.linspace(0, 1, 5000) * 1.2)
    assert parity.parity_failed({"score": good, "amap": bad_map})
    assert parity.worst_output({"score": good, "amap": bad_map}) == "amap"
    assert not parity.parity_failed({"score": good, "amap": good})


# --- INT8 ------------------------------------------------------------------------------------
# The INT8 gate compares test AUROCs, which on a 2-epoch model depend on the machine that
# trained it. So: the gate itself is tested on constructed labels and scores whose AUROCs are
# known; the exported Y-GAN bundle is made with the limit at 1.0, which no AUROC drop can
# exceed (structure and plumbing, certain anywhere); and INT8-vs-FP32 agreement is tested
# on a fixed-weights graph with a bound derived from its own quantisation scales.


@pytest.fixture(scope="module")
def int8_export(trained_run, tmp_path_factory) -> tuple[Path, list[str]]:
    """Y-GAN exported with ``--precisions fp32 --int8`` (no FP16 graph) and its log lines."""
    from adedge.export.bundle_writer import export_bundle
    from adedge.export.options import ExportOptions

    out = tmp_path_factory.mktemp("int8") / "ygan-int8"
    options = ExportOptions(
        trained_run,
        out,
        int8=True,
        precisions=("fp32",),
        int8_options=int8_graph.Int8Options(max_auroc_drop=1.0),  # no drop can exceed 1
    )
    lines: list[str] = []
    export_bundle(options, log=lines.append)
    return out, lines


@pytest.fixture(scope="module")
def int8_bundle(int8_export) -> Path:
    return int8_export[0]


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
    assert entry["max_auroc_drop"] == 1.0  # Int8Options reached the gate and the card
    conversion = entry["stages"]["global"]["conversion"]
    assert conversion["calibration_inputs"] > 100
    fusion = conversion["fusion"]  # every quantised convolution runs as an integer kernel
    assert fusion["fused_convolutions"] == fusion["quantised_convolutions"] > 0
    speed = conversion["speed_on_export_machine"]
    assert speed["fp32_ms"] > 0 and speed["int8_ms"] > 0 and speed["rows"] == 8
    assert set(entry["stages"]["global"]["outputs"]) == {"score"}
    assert 0.0 <= entry["test_auroc"] <= 1.0
    assert entry["delta_auroc"] == pytest.approx(entry["test_auroc"] - entry["test_auroc_fp32"])
    assert stage.engine.precision == "fp32"


def test_int8_bundle_without_fp16_graph_loads_and_streams(int8_bundle, digit_frames):
    """``--precisions fp32 --int8``: no FP16 graph or FP16 checks, and the bundle still runs
    on ONNX Runtime (FP32 and INT8); asking it for FP16 says to re-export."""
    bundle = load_bundle(int8_bundle)
    stage = bundle.card.stages[0]
    assert stage.graph("fp16") is None and set(stage.graphs) == {"fp32", "int8"}
    assert not (int8_bundle / "global.fp16.onnx").exists()
    assert set(bundle.card.metrics["precision"]) == {"int8"}
    for backend in ("onnxruntime", "onnxruntime:int8"):
        results = Detector(int8_bundle, backend=backend).score_frames(digit_frames)
        assert len(results) == len(digit_frames)
        assert all(np.isfinite(r.score) for r in results)
    with pytest.raises(BundleError, match="no FP16 graph for stage 'global'") as caught:
        Detector(int8_bundle, backend="onnxruntime:fp16")
    assert "re-export" in caught.value.one_line()


def test_export_logs_each_step_as_it_starts(int8_export):
    out, lines = int8_export
    steps = [
        "loading checkpoint",
        "reading held-out data 'digits:anomaly=0'",
        "data: ",
        "stage 'global': export constants from",
        "stage 'global': tracing to ONNX (opset 17)",
        "stage 'global': parity torch vs ONNX on",
        "stage 'global': parity max |Δscore|",
        "stage 'global': INT8 calibration on",
        "stage 'global': INT8 fuses ",
        "stage 'global': INT8 speed: ",
        "stage 'global': INT8 (CPU) score vs FP32: p99 |Δ|",
        "threshold: scoring",
        "metrics: test AUROC on",
        "FP32 test AUROC",
        "INT8 (CPU): test AUROC on",
        "INT8 (CPU) test AUROC",
        "threshold ",
        "exported ygan (fp32, int8) to",
    ]
    at = [next(i for i, line in enumerate(lines) if line.startswith(step)) for step in steps]
    assert at == sorted(at), lines
    assert not [line for line in lines if "FP16" in line]  # not asked for: not written
    card = load_bundle(out).card
    final = lines[at[-2]]
    count = card.metrics["val_normal_scores"]["n"]
    assert (
        final
        == f"threshold {card.threshold.value:.6g} (quantile 0.99 of {count} held-out normal images)"
    )
    pathless = [line.replace(str(out), "OUT") for line in lines[1:]]  # [0]: the checkpoint
    assert all(len(line) <= 110 for line in pathless), max(pathless, key=len)


def test_int8_graph_losing_auroc_is_refused(trained_run, tmp_path):
    """With the limit at -inf every INT8 graph "loses" (a drop is >= -1): the option reaches
    the export's gate, and the refused export leaves nothing behind."""
    from adedge.export.bundle_writer import export_bundle
    from adedge.export.options import ExportOptions

    out = tmp_path / "model"
    options = ExportOptions(
        trained_run,
        out,
        precisions=("fp32", "int8"),
        int8_options=int8_graph.Int8Options(max_auroc_drop=-np.inf),
    )
    with pytest.raises(ExportError, match="INT8 graph of ygan loses .* AUROC.*not written"):
        export_bundle(options, log=lambda _: None)
    assert not out.exists()


LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
SEPARATED = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])  # AUROC 1


def test_int8_gate_refuses_a_known_auroc_drop():
    # the anomaly at 0.6 falls below two normals (0.3, 0.4): 2 of 16 pairs, AUROC 14/16
    lossy = np.array([0.1, 0.2, 0.3, 0.4, 0.25, 0.7, 0.8, 0.9])
    with pytest.raises(ExportError, match=r"loses 0.12500 test AUROC .*0.8750 vs 1.0000") as e:
        int8_graph.check_int8_auroc("ygan", LABELS, SEPARATED, lossy)
    assert "the limit is 0.01" in e.value.message and "--precisions" in e.value.hint
    with pytest.raises(ExportError, match="the limit is 0.1"):
        int8_graph.check_int8_auroc(
            "ygan", LABELS, SEPARATED, lossy, int8_graph.Int8Options(max_auroc_drop=0.1)
        )
    loose = int8_graph.Int8Options(max_auroc_drop=0.125)
    assert int8_graph.check_int8_auroc("ygan", LABELS, SEPARATED, lossy, loose) == (1.0, 0.875)


def test_int8_gate_passes_a_graph_that_keeps_the_order():
    # any increasing map of the FP32 scores has the same AUROC: a drop of exactly 0
    kept = np.round(SEPARATED * 40) / 40 + 0.003
    strict = int8_graph.Int8Options(max_auroc_drop=0.0)
    assert int8_graph.check_int8_auroc("ygan", LABELS, SEPARATED, kept, strict) == (1.0, 1.0)
    # a gain is reported, not refused
    assert int8_graph.check_int8_auroc("ygan", LABELS, 1 - SEPARATED, SEPARATED, strict) == (
        0.0,
        1.0,
    )


def test_check_auroc_drop_limits_drops_not_gains():
    parity.check_auroc_drop("ygan", 0.90, 0.895, 0.01)
    parity.check_auroc_drop("ygan", 0.90, 0.95, 0.01)  # a gain is reported, not refused
    with pytest.raises(ExportError, match="loses 0.02000 test AUROC"):
        parity.check_auroc_drop("ygan", 0.90, 0.88, 0.01)


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


# --- INT8 against FP32 on a fixed-weights graph ------------------------------------------------

FIXED_SIDE = 8
CONV1 = np.stack(
    [
        np.full((3, 3), 1 / 9),  # blur
        np.array([[-1, -1, -1], [0, 0, 0], [1, 1, 1]]) / 3,  # horizontal edge
        np.array([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]]) / 3,  # vertical edge
        np.array([[-1, -1, 0], [-1, 0, 1], [0, 1, 1]]) / 3,  # diagonal edge
    ]
)[:, None].astype(np.float32)
CONV2 = np.array([[1.0, 0.5, 0.5, 0.25], [0.5, 0.25, 0.25, 1.0]], np.float32)[:, :, None, None]


def fixed_model() -> onnx.ModelProto:
    """image -> conv1 (INT8) -> relu -> conv2 (the last heavy op before the island: float)
    -> mean over channels and pixels (an island: writes the score)."""
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("ReduceMean", ["c2"], ["score"], name="mean", axes=[1, 2, 3], keepdims=0),
    ]
    side = FIXED_SIDE
    return onnx_model(
        nodes,
        [tensor("image", FP32, ["N", 1, side, side])],
        [tensor("score", FP32, ["N"])],
        [numpy_helper.from_array(CONV1, "w1"), numpy_helper.from_array(CONV2, "w2")],
    )


def int8_error_bound(quantised: onnx.ModelProto, max_input: float) -> float:
    """A bound on |INT8 score - FP32 score| for ``fixed_model`` from the graph's own scales
    and weights, for the inputs it was calibrated on. Rounding to a grid of step s moves a
    value by at most s/2 (clipping to a range that holds the FP32 value never moves it
    further): the input x by e = s_x/2; conv1's output c then by ||w~_c||_1 e +
    ||w~_c - w_c||_1 max|x| (w~ the weights INT8 holds, with int32 accumulation); each later
    activation Q/DQ adds its s/2 (ReLU does not grow errors); the float conv2 multiplies by
    max_d ||w2_d||_1; a mean is at most its largest error."""
    inits = {i.name: numpy_helper.to_array(i) for i in quantised.graph.initializer}
    graph_input = quantised.graph.input[0].name
    activations = [n for n in quantised.graph.node if n.op_type == "QuantizeLinear"]
    input_q = next(n for n in activations if n.input[0] == graph_input)
    e = float(inits[input_q.input[1]]) / 2
    dequant_w = next(
        n
        for n in quantised.graph.node
        if n.op_type == "DequantizeLinear" and inits.get(n.input[0], np.zeros(0)).ndim == 4
    )
    w_scale = inits[dequant_w.input[1]].astype(np.float64).reshape(-1, 1, 1, 1)
    w_int8 = inits[dequant_w.input[0]].astype(np.float64) * w_scale
    rounding = np.abs(w_int8 - CONV1).sum(axis=(1, 2, 3))
    conv1 = np.abs(w_int8).sum(axis=(1, 2, 3)) * e + rounding * max_input
    later = sum(float(inits[n.input[1]]) / 2 for n in activations if n is not input_q)
    return float(np.abs(CONV2).sum(axis=1).max() * (conv1.max() + later))


@pytest.fixture(scope="module")
def fixed_bundle(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A bundle of ``fixed_model`` with its INT8 graph, calibrated on 256 real 8x8 digits."""
    from sklearn.datasets import load_digits

    from adedge.preprocess import InputSpec, prepare_batch

    folder = tmp_path_factory.mktemp("fixed")
    scratch = tmp_path_factory.mktemp("fixed-int8")
    onnx.save(fixed_model(), str(scratch / "fp32.onnx"))
    spec = InputSpec(FIXED_SIDE, FIXED_SIDE, "gray", (0.0,), (1.0,))  # inputs in [0, 1]
    images = list((load_digits().images[:256] * (255 / 16)).round().astype(np.uint8))
    calibration = prepare_batch(images, spec)
    every_layer = int8_graph.Int8Options(min_channels=0)  # conv1 writes 4 channels: narrow
    int8_graph.quantize_int8(
        scratch / "fp32.onnx", scratch / "int8.onnx", "image", calibration, every_layer
    )
    write_bundle(
        folder,
        fixed_model(),
        spec,
        method="fixed",
        threshold=0.0,
        detail="test bundle: fixed weights",
        extra_graphs={"int8": (scratch / "int8.onnx").read_bytes()},
    )
    return folder, images


def test_fixed_graph_is_quantised_outside_its_islands(fixed_bundle):
    folder, _ = fixed_bundle
    assert float_nodes(fixed_model()) == ["mean", "conv2"]
    quantised = onnx.load(str(folder / "global.int8.onnx"))
    nodes = {n.name: n for n in quantised.graph.node}
    produced_by = {out: n for n in quantised.graph.node for out in n.output}
    conv1 = nodes["conv1"]
    assert [produced_by[name].op_type for name in conv1.input[:2]] == ["DequantizeLinear"] * 2
    assert produced_by[nodes["mean"].input[0]] is nodes["conv2"]  # the island reads floats
    floats = {i.name for i in quantised.graph.initializer if i.data_type == FP32}
    assert nodes["conv2"].input[1] in floats  # the excluded conv keeps its FP32 weights


def test_int8_backend_agrees_with_fp32_within_its_quantisation_bound(fixed_bundle):
    folder, images = fixed_bundle
    fp32, _ = Detector(folder).score_images(images)
    int8, _ = Detector(folder, backend="onnxruntime:int8").score_images(images)
    bound = int8_error_bound(onnx.load(str(folder / "global.int8.onnx")), max_input=1.0)
    assert np.abs(int8 - fp32).max() <= bound + 1e-6
    # the bound is tight enough to mean something: a small part of the scores' spread
    assert bound < 0.1 * (fp32.max() - fp32.min())
