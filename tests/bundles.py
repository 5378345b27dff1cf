"""Test bundles built without torch: one ONNX graph and a card, as `adedge export` writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

import adedge
from adedge.bundle import CARD_NAME, Card, GraphFile, StageSpec, ThresholdSpec, sha256_file
from adedge.preprocess import InputSpec


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
