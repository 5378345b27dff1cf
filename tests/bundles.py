"""Test bundles built without torch: one ONNX graph and a card, as `adedge export` writes them.

``onnx_model`` builds any small graph the tests need (opset 17, checked); ``write_bundle``
writes a graph and its card into a bundle folder. The tiny bundles several layers share are
here too: the mean bundle (score = mean of the image) and the tile bundle (score = max over
the tile, amap = the tile), and the frame with one defect they score.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper

import adedge
from adedge.bundle import (
    CARD_NAME,
    Card,
    GraphFile,
    StageSpec,
    ThresholdSpec,
    TilingSpec,
    load_bundle,
    sha256_file,
)
from adedge.preprocess import InputSpec

FLOAT = TensorProto.FLOAT


def tensor(name: str, dtype: int, shape: Sequence[int | str]) -> onnx.ValueInfoProto:
    """A graph input or output: ``tensor("image", FLOAT, ["N", 1, 32, 32])``."""
    return helper.make_tensor_value_info(name, dtype, list(shape))


def onnx_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
    name: str = "g",
) -> onnx.ModelProto:
    """A checked opset-17 model of one graph, at opset 17's IR version (every onnxruntime
    >= 1.14 loads it)."""
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def write_bundle(
    folder: Path,
    graph: bytes | onnx.ModelProto,
    spec: InputSpec,
    *,
    method: str,
    threshold: float,
    detail: str,
    stage: str = "global",
    extra_graphs: dict[str, bytes | onnx.ModelProto] | None = None,
    **stage_fields: Any,
) -> Path:
    """``folder`` holding ``<stage>.onnx`` (``graph``) and its card: a fixed threshold, and
    ``stage_fields`` (outputs, tiling, reduce...) as StageSpec takes them. ``extra_graphs``
    adds graphs of other precisions (``{"int8": graph}``), each written as
    ``<stage>.<precision>.onnx`` with its sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    graphs = {}
    for precision, content in {"fp32": graph, **(extra_graphs or {})}.items():
        name = f"{stage}.onnx" if precision == "fp32" else f"{stage}.{precision}.onnx"
        data = content if isinstance(content, bytes) else content.SerializeToString()
        (folder / name).write_bytes(data)
        graphs[precision] = GraphFile(name, sha256_file(folder / name))
    card = Card(
        method=method,
        stages=(
            StageSpec(name=stage, graphs=graphs, input_name="image", input=spec, **stage_fields),
        ),
        threshold=ThresholdSpec(threshold, "fixed", detail),
        created="test",
        adedge_version=adedge.__version__,
    )
    (folder / CARD_NAME).write_text(json.dumps(card.to_dict(), indent=2), encoding="utf-8")
    return folder


# --- the mean bundle: score = mean of the normalised image ---------------------------------


def mean_model(size: int) -> onnx.ModelProto:
    """Graph "image" float32 (N, 1, size, size) -> "score" (N,) = mean over C, H, W."""
    return onnx_model(
        [helper.make_node("ReduceMean", ["image"], ["score"], axes=[1, 2, 3], keepdims=0)],
        [tensor("image", FLOAT, ["N", 1, size, size])],
        [tensor("score", FLOAT, ["N"])],
        name="mean_score",
    )


# --- the tile bundle: score = max over the tile, amap = the tile ---------------------------

TILE = 32


def max_score_bundle(folder: Path) -> Path:
    """The mean bundle's twin (same input, same method) whose score is the max of the
    normalised image: a "version 2" whose scores differ from the mean bundle's."""
    graph = onnx_model(
        [helper.make_node("ReduceMax", ["image"], ["score"], axes=[1, 2, 3], keepdims=0)],
        [tensor("image", FLOAT, ["N", 1, 32, 32])],
        [tensor("score", FLOAT, ["N"])],
        name="max_score",
    )
    spec = InputSpec(32, 32, "gray", (0.5,), (0.5,))
    return write_bundle(folder, graph, spec, method="mean", threshold=0.0, detail="v2")


def pixel_frame_bundle(
    folder: Path, side: int = 64, value: float = 0.3, min_area: int = 20
) -> Path:
    """Whole-frame tile bundle on grey ``side`` px input: score = the brightest pixel (image
    threshold 0.5), heatmap = the frame, and a pixel threshold ``value`` with ``min_area``
    pixels of a ``side`` x ``side`` frame."""
    import dataclasses

    from adedge.bundle import load_bundle
    from adedge.card import PixelThreshold

    folder = write_tile_bundle(
        folder, None, input_spec=InputSpec(side, side, "gray", (0.0,), (1.0,))
    )
    card = load_bundle(folder).card
    rule = PixelThreshold(value, 99.9, min_area, (side, side), "test")
    card = dataclasses.replace(card, threshold=dataclasses.replace(card.threshold, pixel=rule))
    (folder / CARD_NAME).write_text(json.dumps(card.to_dict()), encoding="utf-8")
    return folder


def tile_max_model(size: int, channels: int = 1) -> onnx.ModelProto:
    """Graph "image" (N, C, size, size) -> "score" (N,) = max over C, H, W; "amap" = the input."""
    shape = ["N", channels, size, size]
    return onnx_model(
        [
            helper.make_node("ReduceMax", ["image"], ["score"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Identity", ["image"], ["amap"]),
        ],
        [tensor("image", FLOAT, shape)],
        [tensor("score", FLOAT, ["N"]), tensor("amap", FLOAT, shape)],
        name="max_and_identity",
    )


def write_tile_bundle(
    folder: Path,
    tiling: TilingSpec | None,
    reduce: str = "max",
    outputs: tuple[str, ...] = ("score", "amap"),
    size: int = TILE,
    input_spec: InputSpec | None = None,
) -> Path:
    """A "local" stage of ``tile_max_model`` whose input is by default grey normalised to
    [0, 1] (mean 0, std 1): a tile's score is its brightest pixel."""
    input_spec = input_spec or InputSpec(size, size, "gray", (0.0,), (1.0,))
    return write_bundle(
        folder,
        tile_max_model(input_spec.height, input_spec.channels),
        input_spec,
        method="tile-max",
        threshold=0.5,
        detail="test bundle: brightest pixel of a tile",
        stage="local",
        outputs=outputs,
        tiling=tiling,
        reduce=reduce,
    )


def two_stage_bundle(folder: Path, tiling: TilingSpec, global_weight: float = 1.0) -> Path:
    """A whole-frame "global" stage (mean, 64 px, weighted ``global_weight``) beside the
    tiled "local" stage of :func:`write_tile_bundle`: two graphs, one card."""
    import dataclasses

    write_tile_bundle(folder, tiling)
    (folder / "global.onnx").write_bytes(mean_model(64).SerializeToString())
    card = load_bundle(folder).card
    whole = StageSpec(
        name="global",
        graphs={"fp32": GraphFile("global.onnx", sha256_file(folder / "global.onnx"))},
        input_name="image",
        input=InputSpec(64, 64, "gray", (0.5,), (0.25,)),
        weight=global_weight,
    )
    card = dataclasses.replace(card, stages=(whole, *card.stages))
    (folder / CARD_NAME).write_text(json.dumps(card.to_dict()), encoding="utf-8")
    return folder


DEFECT_YX = (180, 52)


def defect_frame(height: int = 256, width: int = 192) -> np.ndarray:
    """A dim, gently varying BGR frame with one bright round defect at DEFECT_YX."""
    ys, xs = np.mgrid[:height, :width]
    grey = (30 + 20 * np.sin(xs / 9.0) * np.cos(ys / 13.0)).astype(np.uint8)
    cv2.circle(grey, DEFECT_YX[::-1], 5, 255, -1)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
