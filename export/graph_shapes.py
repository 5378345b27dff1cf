"""Shapes of a graph's tensors, from ONNX shape inference: what the INT8 layer choice and the
CPU layout choice read (channels of a feature map, its spatial size)."""

from __future__ import annotations

import onnx


def tensor_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Every tensor's shape that shape inference knows; an unknown dim (the batch) is None."""
    from onnx import shape_inference

    graph = shape_inference.infer_shapes(model).graph
    shapes = {}
    for value in (*graph.value_info, *graph.output, *graph.input):
        if not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    return shapes


def feature_channels(model: onnx.ModelProto) -> dict[str, int]:
    """Channels of every 4-D tensor (N, C, H, W) whose channel count is known."""
    return {
        name: shape[1]
        for name, shape in tensor_shapes(model).items()
        if len(shape) == 4 and shape[1] is not None
    }
