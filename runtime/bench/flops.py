"""FLOPs of an ONNX graph for one input: 2 x the multiply-accumulates of its Conv,
ConvTranspose, Gemm and MatMul nodes, with the shapes its tensors take when it runs (ONNX
shape inference loses shapes after Resize and other data-dependent ops); and the bytes it
moves (``traffic_bytes``), the x-axis of the roofline. Needs the ``onnx`` package (the
export extra), imported when a count is asked for."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from adedge.preprocess import InputSpec

if TYPE_CHECKING:
    import onnx

MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def count_flops(path: Path, spec: InputSpec) -> int:
    """2 x multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul for one input (batch 1),
    from the ONNX graph's nodes and the shapes its tensors take on one input."""
    import onnx

    model = onnx.load(str(path))
    nodes = [node for node in model.graph.node if node.op_type in MAC_OPS]
    names = {name for node in nodes for name in (*node.input[:2], node.output[0])}
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    shapes.update(run_shapes(model, names - set(shapes), spec))
    return 2 * sum(node_macs(node, shapes) for node in nodes)


def run_shapes(model: onnx.ModelProto, names: set[str], spec: InputSpec) -> dict[str, list[int]]:
    """Shapes of the tensors ``names`` on one input, from running the graph with them as
    outputs: ONNX shape inference loses shapes after Resize and other data-dependent ops."""
    return {name: list(np.shape(value)) for name, value in run_values(model, names, spec).items()}


def run_values(model: onnx.ModelProto, names: set[str], spec: InputSpec) -> dict[str, np.ndarray]:
    """The tensors ``names`` (and the graph's outputs) on one all-zero input."""
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    present = {output.name for output in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in sorted(names - present))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    image = np.zeros((1, spec.channels, spec.height, spec.width), np.float32)
    outputs = [output.name for output in session.get_outputs()]
    values = session.run(outputs, {session.get_inputs()[0].name: image})
    return dict(zip(outputs, (np.asarray(v) for v in values), strict=True))


def traffic_bytes(path: Path, spec: InputSpec) -> int:
    """Bytes one input moves through memory if no tensor stayed in cache, in the graph ONNX
    Runtime runs (its optimised graph, fusions applied: a fused integer convolution reads
    and writes 8-bit tensors, an unfused quantised one also moves its FP32 copies): each op
    reads its inputs and writes its outputs, weights included. An estimate for the
    roofline's x-axis (caches hold much of a small tile's traffic), not a measurement."""
    import tempfile

    import onnx
    from onnx import numpy_helper

    from adedge.runtime.bench.fusion import optimised_graph

    with tempfile.TemporaryDirectory() as folder:
        optimised = Path(folder) / "optimised.onnx"
        optimised_graph(path, optimised)
        model = onnx.load(str(optimised))
    graph = model.graph
    sizes = {init.name: numpy_helper.to_array(init).nbytes for init in graph.initializer}
    computed = {out for node in graph.node for out in node.output if out}
    values = run_values(model, computed - set(sizes), spec)
    sizes.update({name: value.nbytes for name, value in values.items()})
    sizes[graph.input[0].name] = 4 * spec.channels * spec.height * spec.width
    return sum(sizes.get(name, 0) for node in graph.node for name in (*node.input, *node.output))


def node_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    if node.op_type == "Conv":
        out, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
        if out and weight:
            return int(np.prod(out)) * int(np.prod(weight[1:]))
    if node.op_type == "ConvTranspose":
        inp, weight = shapes.get(node.input[0]), shapes.get(node.input[1])
        if inp and weight:
            return int(np.prod(inp)) * int(np.prod(weight[1:]))
    if node.op_type in ("Gemm", "MatMul"):
        a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
        if a and out:
            return int(np.prod(out)) * a[-1]
    return 0
