"""ONNX Runtime's blocked NCHWc layout, chosen per stage at export (``nchwc`` on the card):
the rule on synthetic graphs, the pass name ONNX Runtime really knows, the runtime opening a
stage without it (same scores), and Triton's config saying the same."""

from __future__ import annotations

import json
import platform
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from bundles import onnx_model, tensor, write_bundle
from onnx import TensorProto, helper, numpy_helper

from adedge.bundle import CARD_NAME, Card, load_bundle
from adedge.export.cpu_layout import NCHWC_BLOCK, narrow_conv_share, wants_nchwc
from adedge.preprocess import InputSpec
from adedge.runtime.backends.onnxruntime import NCHWC_PASS, disabled_optimizers
from adedge.runtime.detector import Detector
from adedge.runtime.triton_config import ONNX_PLATFORM, TritonModel, config_text

SIDE = 16


def conv_chain(widths: list[int], side: int = SIDE) -> onnx.ModelProto:
    """image (N, 3, side, side) -> 3x3 convs writing ``widths`` channels -> mean: score."""
    rng = np.random.default_rng(0)
    nodes, weights, source, channels = [], [], "image", 3
    for index, width in enumerate(widths):
        weight = rng.normal(0, 0.3, (width, channels, 3, 3)).astype(np.float32)
        weights.append(numpy_helper.from_array(weight, f"w{index}"))
        name = f"c{index}"
        nodes.append(helper.make_node("Conv", [source, f"w{index}"], [name], pads=[1] * 4))
        source, channels = name, width
    nodes.append(helper.make_node("ReduceMean", [source], ["score"], axes=[1, 2, 3], keepdims=0))
    return onnx_model(
        nodes,
        [tensor("image", TensorProto.FLOAT, ["N", 3, side, side])],
        [tensor("score", TensorProto.FLOAT, ["N"])],
        weights,
    )


def test_the_share_weighs_each_conv_by_its_multiply_adds():
    assert narrow_conv_share(conv_chain([3, 3])) == 1.0
    assert narrow_conv_share(conv_chain([32, 32])) == 0.0
    # 3 -> 4 (4 x 3 x 9 per pixel) then 4 -> 32 (32 x 4 x 9): 108 of 1260 narrow
    assert narrow_conv_share(conv_chain([4, 32])) == pytest.approx(108 / (108 + 1152))
    assert narrow_conv_share(mean_only()) == 0.0
    assert not wants_nchwc(conv_chain([3, 6, 3]))
    assert wants_nchwc(conv_chain([NCHWC_BLOCK, 2 * NCHWC_BLOCK]))


def mean_only() -> onnx.ModelProto:
    return onnx_model(
        [helper.make_node("ReduceMean", ["image"], ["score"], axes=[1, 2, 3], keepdims=0)],
        [tensor("image", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])],
        [tensor("score", TensorProto.FLOAT, ["N"])],
    )


def optimised_ops(path, disabled: list[str]) -> list[str]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
    )
    return [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]


def has_nchwc_kernels() -> bool:
    """ONNX Runtime's NCHWc kernels exist on x86 with AVX2 or later (not on ARM)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    cpuinfo = Path("/proc/cpuinfo")
    return not cpuinfo.exists() or " avx2" in cpuinfo.read_text()


def test_onnx_runtime_knows_the_pass_the_card_turns_off(tmp_path):
    """With the pass on, a 32-channel conv is reordered into NCHWc (on CPUs that have the
    kernels); with it off, never: the name is ONNX Runtime's own (it ignores unknown ones)."""
    path = tmp_path / "wide.onnx"
    onnx.save(conv_chain([32, 32]), str(path))
    reorders = {"ReorderInput", "ReorderOutput"}
    blocked = set(optimised_ops(path, [])) & reorders
    assert not set(optimised_ops(path, [NCHWC_PASS])) & reorders
    assert bool(blocked) == has_nchwc_kernels()


@pytest.fixture()
def narrow_bundle(tmp_path):
    spec = InputSpec(SIDE, SIDE, "rgb", (0.5,) * 3, (0.5,) * 3)
    return write_bundle(
        tmp_path / "narrow",
        conv_chain([3, 6, 3]),
        spec,
        method="narrow",
        threshold=0.0,
        detail="test bundle",
        nchwc=False,
    )


def test_a_stage_without_nchwc_round_trips_and_scores_the_same(narrow_bundle, tmp_path):
    card = json.loads((narrow_bundle / CARD_NAME).read_text())
    assert card["stages"]["global"]["nchwc"] is False
    stage = load_bundle(narrow_bundle).card.stages[0]
    assert stage.nchwc is False and disabled_optimizers(stage) == [NCHWC_PASS]
    frames = [
        np.random.default_rng(i).integers(0, 256, (SIDE, SIDE, 3), np.uint8) for i in range(4)
    ]
    plain = Detector(narrow_bundle).score_frames(frames)
    del card["stages"]["global"]["nchwc"]  # an older card: the blocked layout, as before
    (narrow_bundle / CARD_NAME).write_text(json.dumps(card))
    assert load_bundle(narrow_bundle).card.stages[0].nchwc is True
    blocked = Detector(narrow_bundle).score_frames(frames)
    for a, b in zip(plain, blocked, strict=True):
        assert a.score == pytest.approx(b.score, rel=1e-5, abs=1e-6)


def test_triton_runs_such_a_stage_without_the_layout_level(narrow_bundle):
    card = load_bundle(narrow_bundle).card

    def text(of: Card) -> str:
        model = TritonModel("m", ONNX_PLATFORM, 8, (), (), (8,), 100, "cpu", 1, of, "global")
        return config_text(model)

    assert "optimization {\n  graph { level: 1 }\n}" in text(card)
    blocked = replace(card, stages=(replace(card.stages[0], nchwc=True),))
    assert "optimization" not in text(blocked)
