"""Which layers the INT8 graph quantises, and the graph fix that lets ONNX Runtime fuse them.

:mod:`adedge.export.int8` quantises every layer but three kinds, which stay FP32:

* ``float_nodes``: the FP32 islands of :mod:`adedge.export.fp16_policy` (the score math) and
  each network's last layer that feeds them, for accuracy;
* ``narrow_nodes``: layers writing a feature map of fewer than ``min_channels`` channels, for
  speed. ONNX Runtime's integer convolution cuts a 3-channel 3x3 conv into a K = 27 matrix
  product with 3 columns, and im2col plus per-channel requantisation cost more than the
  products: measured 2-6x *slower* than FP32 on CBiGAN's full-resolution blocks
  (``benchmarks/results/cpu_texture.md``). The ops around them (activations, residual adds,
  pools) stay FP32 with them, so no quantise/dequantise pair sits between two FP32 layers;
* ``ConvTranspose``: ONNX Runtime's CPU provider has no integer kernel for it, so a quantised
  one runs as dequantise -> FP32 -> quantise, slower than FP32 alone.

``split_shared_biases`` is applied before quantising: see its docstring.
"""

from __future__ import annotations

import onnx

from adedge.export.fp16_policy import HEAVY_OPS, fp32_island_nodes
from adedge.export.graph_shapes import feature_channels

BIASED_OPS = ("Conv", "ConvTranspose", "Gemm")
UNFUSED_OPS = ("ConvTranspose",)  # no integer kernel on ONNX Runtime's CPU provider


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes INT8 leaves in float: the FP32 islands, and the layers whose results they
    read, back to and including the last heavy op (Conv, Gemm...) on each path. Quantising
    that last layer would hand the score math 8-bit logits or reconstructions."""
    islands = fp32_island_nodes(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    excluded = dict.fromkeys(islands)
    pending = [name for node in model.graph.node if node.name in excluded for name in node.input]
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.name in excluded:
            continue
        excluded[node.name] = None
        if node.op_type not in HEAVY_OPS:
            pending.extend(node.input)
    return list(excluded)


def narrow_nodes(model: onnx.ModelProto, min_channels: int) -> list[str]:
    """The nodes whose output feature map has fewer than ``min_channels`` channels."""
    channels = feature_channels(model)
    narrow = []
    for node in model.graph.node:
        written = [channels[name] for name in node.output if name in channels]
        if written and min(written) < min_channels:
            narrow.append(node.name)
    return narrow


def unfused_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes of ops ONNX Runtime's CPU provider cannot run as integer kernels."""
    return [node.name for node in model.graph.node if node.op_type in UNFUSED_OPS]


def split_shared_biases(model: onnx.ModelProto) -> int:
    """Give every Conv/ConvTranspose/Gemm its own bias initializer; returns how many it gave.

    A quantised bias is int32 at the scale ``input scale x weight scale`` of its layer, so one
    tensor cannot serve two layers. The torch exporter deduplicates equal initializers (the
    all-zero biases of freshly initialised layers, equal biases of twin layers) and reaches
    the copies through ``Identity`` nodes; the quantiser then quantised the shared tensor once,
    at one layer's scale, and ONNX Runtime fused none of the layers sharing it (94 of
    CBiGAN's 97 convolutions stayed DQ -> FP32 Conv -> Q)."""
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    given = 0
    for node in graph.node:
        if node.op_type not in BIASED_OPS or len(node.input) < 3 or not node.input[2]:
            continue
        source = node.input[2]
        while source in producers and producers[source].op_type == "Identity":
            source = producers[source].input[0]
        if source not in initializers:
            continue  # a computed bias: nothing to split
        if source == node.input[2] and readers[source] == 1:
            continue  # already its own
        own = onnx.TensorProto()
        own.CopyFrom(initializers[source])
        own.name = f"{node.name}.bias"
        while own.name in initializers:
            own.name += "_"
        initializers[own.name] = own
        graph.initializer.append(own)
        node.input[2] = own.name
        given += 1
    if given:
        drop_unread(graph)
    return given


def drop_unread(graph: onnx.GraphProto) -> None:
    """Remove the Identity nodes and initializers nothing reads any more (ONNX Runtime
    warns about every unread initializer of a graph it loads)."""
    outputs = {output.name for output in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        unread = [
            node
            for node in graph.node
            if node.op_type == "Identity" and not any(out in read for out in node.output)
        ]
        if not unread:
            break
        for node in unread:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input} | outputs
    for tensor in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(tensor)
