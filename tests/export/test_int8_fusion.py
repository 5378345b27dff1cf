"""INT8 graphs that ONNX Runtime really runs as integer kernels, counted in the graph it
optimises (``optimized_model_filepath``), for every method's graph at the papers' sizes.

Before issue 22 the quantiser wrote signed activations and kept biases the exporter shared:
ONNX Runtime fused 0 of CBiGAN's 92 quantised convolutions, 6 of PANDA's 63 and 4 of IGD's
42 (``benchmarks/results/cpu_texture.md``). Weights are the paper presets' random
initialisation and calibration is uniform noise: fusion depends on the graph, not on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from bundles import onnx_model, tensor
from onnx import TensorProto, helper, numpy_helper

from adedge.export.fp16_policy import fp32_island_nodes, name_nodes
from adedge.export.int8 import Int8Options, quantize_int8
from adedge.export.int8_layers import narrow_nodes, split_shared_biases
from adedge.export.paper_cases import paper_config
from adedge.export.trace import INPUT_NAME, trace_to_onnx
from adedge.preprocess import InputSpec
from adedge.runtime.bench.fusion import count_fusion, optimised_graph
from adedge.runtime.bench.papers import CASES
from adedge.train.methods import load_method

# one graph per method and stage mode (Y-GAN's 256 px case repeats its 32 px layers, slower)
GRAPHS = list(
    {(c.method, s.mode): (c.method, s) for c in reversed(CASES) for s in c.stages}.values()
)
EVERY_LAYER = Int8Options(min_channels=0)  # quantise every layer outside the FP32 islands


def paper_graph(method_name: str, stage, folder: Path) -> Path:
    """The method's pruned scorer at the paper preset and size, traced to FP32 ONNX."""
    method = load_method(method_name)
    torch.manual_seed(0)
    config = paper_config(method, stage)
    model = method.build(config, 9).eval()
    plan = method.stage_plan(config)
    colour = "gray" if stage.channels == 1 else "rgb"
    spec = InputSpec(plan.input_size, plan.input_size, colour, *(((0.5,) * stage.channels,) * 2))
    path = folder / f"{method_name}-{plan.name}-{stage.image_size}.onnx"
    trace_to_onnx(method.inference_module(model).eval(), spec, path, 17)
    return path


def calibration(path: Path, count: int = 4) -> np.ndarray:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value for d in dims[1:]]
    return np.random.default_rng(1).uniform(-1, 1, (count, *shape)).astype(np.float32)


@pytest.fixture(scope="module", params=GRAPHS, ids=lambda g: f"{g[0]}-{g[1].mode or 'global'}")
def fp32_graph(request, tmp_path_factory) -> Path:
    method, stage = request.param
    return paper_graph(method, stage, tmp_path_factory.mktemp(method))


def island_convolutions(path: Path) -> int:
    """Convolutions inside the FP32 islands (score math such as MS-SSIM's windows)."""
    model = onnx.load(str(path))
    name_nodes(model.graph)
    islands = set(fp32_island_nodes(model))
    return sum(
        n.op_type in ("Conv", "ConvTranspose") and n.name in islands for n in model.graph.node
    )


def test_every_layer_quantised_fuses_and_covers_nine_tenths_of_the_networks(fp32_graph):
    int8 = fp32_graph.with_suffix(".int8.onnx")
    report = quantize_int8(fp32_graph, int8, INPUT_NAME, calibration(fp32_graph), EVERY_LAYER)
    fusion = count_fusion(int8)
    assert report.fusion == fusion
    assert fusion.fused_convolutions == fusion.quantised_convolutions
    networks = fusion.convolutions - island_convolutions(fp32_graph)
    assert fusion.fused_convolutions >= 0.9 * networks, fusion


def test_narrow_layers_stay_fp32_and_the_rest_fuse(fp32_graph):
    int8 = fp32_graph.with_suffix(".default.int8.onnx")
    report = quantize_int8(fp32_graph, int8, INPUT_NAME, calibration(fp32_graph))
    model = onnx.load(str(fp32_graph))
    name_nodes(model.graph)
    narrow = set(narrow_nodes(model, Int8Options().min_channels))
    assert report.narrow_nodes <= len(narrow)
    assert report.fusion.fused_convolutions == report.fusion.quantised_convolutions
    quantised = onnx.load(str(int8))
    producers = {out: node.op_type for node in quantised.graph.node for out in node.output}
    for node in quantised.graph.node:  # a narrow conv keeps its FP32 weights
        if node.op_type == "Conv" and node.name in narrow:
            assert producers.get(node.input[1]) != "DequantizeLinear", node.name


def shared_bias_model() -> onnx.ModelProto:
    """x -> conv_a -> relu -> conv_b -> relu -> conv_c -> mean, where conv_a and conv_b read
    one all-zero bias through Identity nodes, as the torch exporter writes deduplicated
    initializers, and 16 channels throughout (not narrow)."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.2, (16, 16, 3, 3)).astype(np.float32), f"w{i}")
        for i in "abc"
    ]
    zero = numpy_helper.from_array(np.zeros(16, np.float32), "zero_bias")
    nodes = [
        helper.make_node("Identity", ["zero_bias"], ["bias_a"], name="id_a"),
        helper.make_node("Identity", ["zero_bias"], ["bias_b"], name="id_b"),
        helper.make_node("Conv", ["image", "wa", "bias_a"], ["ca"], name="conv_a", pads=[1] * 4),
        helper.make_node("Relu", ["ca"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wb", "bias_b"], ["cb"], name="conv_b", pads=[1] * 4),
        helper.make_node("Relu", ["cb"], ["rb"], name="relu_b"),
        helper.make_node("Conv", ["rb", "wc"], ["cc"], name="conv_c", pads=[1] * 4),
        helper.make_node("ReduceMean", ["cc"], ["score"], name="mean", axes=[1, 2, 3], keepdims=0),
    ]
    return onnx_model(
        nodes,
        [tensor("image", TensorProto.FLOAT, ["N", 16, 8, 8])],
        [tensor("score", TensorProto.FLOAT, ["N"])],
        [*weights, zero],
    )


def test_a_shared_bias_is_split_and_both_layers_fuse(tmp_path):
    model = shared_bias_model()
    assert split_shared_biases(model) == 2
    convs = [n for n in model.graph.node if n.op_type == "Conv" and len(n.input) == 3]
    assert len({n.input[2] for n in convs}) == 2  # one bias each
    assert not [n for n in model.graph.node if n.op_type == "Identity"]  # nothing left unread
    assert "zero_bias" not in {t.name for t in model.graph.initializer}
    assert split_shared_biases(model) == 0  # each already has its own

    source, int8 = tmp_path / "shared.onnx", tmp_path / "shared.int8.onnx"
    onnx.save(shared_bias_model(), str(source))
    inputs = np.random.default_rng(2).uniform(-1, 1, (8, 16, 8, 8)).astype(np.float32)
    report = quantize_int8(source, int8, "image", inputs)
    assert report.fusion.quantised_convolutions == report.fusion.fused_convolutions == 2


def test_the_fusion_count_reads_the_graph_onnx_runtime_runs(tmp_path):
    """The counter's optimised graph is the one ONNX Runtime writes for the session."""
    source, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    onnx.save(shared_bias_model(), str(source))
    inputs = np.random.default_rng(2).uniform(-1, 1, (8, 16, 8, 8)).astype(np.float32)
    quantize_int8(source, int8, "image", inputs)
    optimised_graph(int8, tmp_path / "opt.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("QLinearConv") == 2 and "Conv" in ops  # conv_c feeds the score: FP32
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": inputs})[0].shape == (8,)
