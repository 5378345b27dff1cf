"""Stand-in bundles for the serve benchmark (``adedge bench --serve`` without ``--model``):
two small convolutional graphs with fixed random weights, built with ``onnx.helper`` (no
torch), whose cost is that of a real model rather than of a trivial graph (a ReduceMax
measures only overhead).

- ``whole``: a whole-frame model, the frame resized to 256x256 RGB, three 3x3 convolutions
  (3->16 stride 2, 16->32 stride 2, 32->32) and a 1x1 head giving a 64x64 map; score = its
  max. About 0.13 GFLOP per frame: it stands for a small student network scoring a whole
  frame, where reading and resizing the frame cost as much as inference.
- ``tiled``: a patch model, the frame resized to 512x512 and cut into 8x8 = 64 tiles of
  64x64 RGB, each through three 3x3 convolutions (3->16, 16->32 stride 2, 32->32) and a 1x1
  head, the 32x32 map upsampled to the tile; a frame's score is the max over its tiles.
  About 2 GFLOP per frame: it stands for a tiled texture/patch model (CBiGAN-like textures
  at 64 px tiles), where inference dominates and batching tiles pays.

The threshold is far above any score the graphs give: no alarm fires, so the benchmark
measures scoring, not event evidence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import adedge
from adedge.bundle import (
    CARD_NAME,
    Card,
    GraphFile,
    StageSpec,
    ThresholdSpec,
    TilingSpec,
    sha256_file,
)
from adedge.errors import AdedgeError
from adedge.preprocess import InputSpec

STANDIN_THRESHOLD = 1e30  # above every score: no event, no evidence written
WHOLE_SIZE = 256
TILED_FRAME = 512
TILE = 64
Conv = tuple[int, int, int, int]  # (in channels, out channels, kernel, stride)
WHOLE_CONVS: tuple[Conv, ...] = ((3, 16, 3, 2), (16, 32, 3, 2), (32, 32, 3, 1), (32, 1, 1, 1))
TILED_CONVS: tuple[Conv, ...] = ((3, 16, 3, 1), (16, 32, 3, 2), (32, 32, 3, 1), (32, 1, 1, 1))


@dataclass(frozen=True)
class StandinBundles:
    """The two stand-in bundle folders."""

    whole: Path
    tiled: Path


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise AdedgeError(
            "the benchmark's stand-in models need onnx, which is not installed",
            "pip install onnx, or pass your own bundles with --model and --tiled-model",
        ) from None
    return onnx, helper, numpy_helper


def conv_graph(size: int, convs: tuple[Conv, ...], upsample: int, seed: int):
    """Graph "image" (N, 3, size, size) -> "score" (N,), "amap" (N, 1, h, w): the ``convs``
    with ReLU between them, random fixed weights (He-scaled), the last map upsampled by
    ``upsample`` (1: none)."""
    onnx, helper, numpy_helper = _onnx()
    rng = np.random.default_rng(seed)
    nodes, weights = [], []
    current = "image"
    for number, (c_in, c_out, kernel, stride) in enumerate(convs):
        scale = np.sqrt(2.0 / (c_in * kernel * kernel))
        w = (rng.standard_normal((c_out, c_in, kernel, kernel)) * scale).astype(np.float32)
        b = np.zeros(c_out, np.float32)
        weights += [
            numpy_helper.from_array(w, f"w{number}"),
            numpy_helper.from_array(b, f"b{number}"),
        ]
        out = f"conv{number}"
        pad = kernel // 2
        nodes.append(
            helper.make_node(
                "Conv", [current, f"w{number}", f"b{number}"], [out],
                kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4,
            )
        )  # fmt: skip
        current = out
        if number < len(convs) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"relu{number}"]))
            current = f"relu{number}"
    if upsample > 1:
        scales = numpy_helper.from_array(np.array([1, 1, upsample, upsample], np.float32), "scales")
        weights.append(scales)
        nodes.append(helper.make_node("Resize", [current, "", "scales"], ["amap"], mode="linear"))
    else:
        nodes.append(helper.make_node("Identity", [current], ["amap"]))
    nodes.append(helper.make_node("ReduceMax", ["amap"], ["score"], axes=[1, 2, 3], keepdims=0))
    strides = int(np.prod([stride for _, _, _, stride in convs]))
    side = size // strides * upsample
    graph = helper.make_graph(
        nodes,
        "serve_bench_standin",
        [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["N", 3, size, size])],
        [
            helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("amap", onnx.TensorProto.FLOAT, ["N", 1, side, side]),
        ],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # opset 17's: every onnxruntime >= 1.14 loads it
    onnx.checker.check_model(model, full_check=True)
    return model


def _write(folder: Path, model, spec: InputSpec, tiling: TilingSpec | None, what: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = "local.onnx" if tiling is not None else "global.onnx"
    (folder / name).write_bytes(model.SerializeToString())
    stage = StageSpec(
        name=Path(name).stem,
        graphs={"fp32": GraphFile(name, sha256_file(folder / name))},
        input_name="image",
        input=spec,
        outputs=("score", "amap"),
        tiling=tiling,
        reduce="max",
    )
    card = Card(
        method="serve-bench-standin",
        stages=(stage,),
        threshold=ThresholdSpec(STANDIN_THRESHOLD, "fixed", f"benchmark stand-in: {what}"),
        created="adedge bench --serve",
        adedge_version=adedge.__version__,
    )
    (folder / CARD_NAME).write_text(json.dumps(card.to_dict(), indent=2), encoding="utf-8")
    return folder


def write_standin_bundles(folder: Path) -> StandinBundles:
    """Write the whole-frame and the tiled stand-in bundles under ``folder``."""
    rgb = ((0.5,) * 3, (0.5,) * 3)
    whole = _write(
        folder / "standin-whole",
        conv_graph(WHOLE_SIZE, WHOLE_CONVS, upsample=1, seed=0),
        InputSpec(WHOLE_SIZE, WHOLE_SIZE, "rgb", *rgb),
        None,
        "whole-frame convolutions, ~0.13 GFLOP/frame",
    )
    tiled = _write(
        folder / "standin-tiled",
        conv_graph(TILE, TILED_CONVS, upsample=2, seed=1),
        InputSpec(TILE, TILE, "rgb", *rgb),
        TilingSpec((TILED_FRAME, TILED_FRAME), TILE, TILE),
        "64 tiles of 64 px through convolutions, ~2 GFLOP/frame",
    )
    return StandinBundles(whole, tiled)
