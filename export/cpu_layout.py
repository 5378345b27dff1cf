"""Whether ONNX Runtime's blocked NCHWc layout pays for a graph on x86 CPUs.

At its highest optimisation level ONNX Runtime rewrites convolutions into a blocked layout
(NCHWc: channels in blocks of 16 floats on AVX-512, 8 on AVX2) and vectorises over the
output channels of a block. A layer writing 3 channels still computes a whole block, 5.3x
its work on AVX-512, and is reordered back to plain NCHW for the ops after it. Most conv
work in CBiGAN's residual networks (3-48 channels) sits in such layers, and its texture
graph runs 1.4x faster without the blocked layout, its object graph 1.7x; every other
method's graph is 6-52% slower without it (``benchmarks/results/cpu_texture.md``).

So export measures, per stage, the share of its convolution work (multiply-adds) done in
layers writing fewer than ``NCHWC_BLOCK`` channels, and where it is above ``NARROW_SHARE``
the card says ``nchwc: false``: the runtime then opens the stage's graphs with ONNX
Runtime's ``NchwcTransformer`` disabled (everything else of the highest level stays on).
ARM builds of ONNX Runtime have no NCHWc, so the flag changes nothing there.
"""

from __future__ import annotations

import onnx

from adedge.export.graph_shapes import tensor_shapes
from adedge.runtime.bench.flops import node_macs

NCHWC_BLOCK = 16  # floats per block on AVX-512 (8 on AVX2): the widest block is the costliest
NARROW_SHARE = 0.5  # above this share of conv work in narrow layers, run without NCHWc


def narrow_conv_share(model: onnx.ModelProto) -> float:
    """The share of the graph's convolution multiply-adds in layers writing fewer than
    ``NCHWC_BLOCK`` channels (0.0 for a graph without convolutions)."""
    shapes = {  # one input (the batch as 1); tensors whose other dims are unknown are left out
        name: [1, *shape[1:]]
        for name, shape in tensor_shapes(model).items()
        if shape and None not in shape[1:]
    }
    shapes.update({tensor.name: list(tensor.dims) for tensor in model.graph.initializer})
    total = narrow = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        macs = node_macs(node, shapes)  # 0 where a shape is unknown
        total += macs
        if macs and shapes[node.output[0]][1] < NCHWC_BLOCK:
            narrow += macs
    return narrow / total if total else 0.0


def wants_nchwc(model: onnx.ModelProto) -> bool:
    """True unless most of the graph's convolution work is in narrow layers."""
    return narrow_conv_share(model) <= NARROW_SHARE
