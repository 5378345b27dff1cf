"""The FP16 policy: which nodes of an FP32 ONNX graph run in FP16 and which stay in FP32
(docs/architecture.md, Precision). :mod:`adedge.export.fp16` writes the mixed-precision graph
this decides.

Policy (``node_precisions``): the networks run in FP16, the score math after them in FP32.

1. a node that writes a graph output (the fused ``score``, ``amap``) runs in FP32;
2. ops that overflow or underflow: ``Exp``, ``Log``, ``Pow``, ``Softmax``/``LogSoftmax``,
   the normalisations (InstanceNorm loses accuracy in FP16), and every *sum-like*
   reduction (``ReduceSum``, ``ReduceSumSquare``, ``ReduceL1``/``L2``, ``ReduceLogSum(Exp)``,
   ``ReduceProd``, ``CumSum``) run in FP32 whatever their size: a sum of squares over a
   few hundred latent units can already pass 65504;
3. *mean-like* reductions (``ReduceMean``, ``GlobalAveragePool``, ``AveragePool``...) run in
   FP32 when they reduce more than ``Fp16Policy.mean_fp32_elements`` (256) elements per
   output value, or an unknown number: a mean cannot overflow, but an FP16 accumulator
   over thousands of values keeps about three digits;
4. FP32 then spreads over *light* ops (everything but the learned, compute-dense ones:
   Conv, ConvTranspose, Gemm, MatMul, Einsum, RNNs), until nothing changes: forward to a
   light op that reads a computed FP32 tensor (the image itself, or an island's result),
   and backward to a light op whose float results only FP32 nodes read. So |x - x̂|, the
   decoder's final Tanh, MS-SSIM's local statistics (E[x²] - E[x]² cancels catastrophically
   in FP16; its Gaussian window is a depthwise Conv, treated as a light filter) and the
   score's arithmetic all join the FP32 region, while a branch that feeds the next
   convolution stays FP16. Casts sit at the boundary, not around every op;
5. everything else runs in FP16. Ops whose ONNX schema has no FP16 type, and ops whose
   output type comes from an attribute the rewrite does not change (``RandomNormal``...), stay
   FP32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from adedge.errors import ExportError

FP32 = TensorProto.FLOAT


FP16 = TensorProto.FLOAT16


SUM_REDUCTIONS = frozenset(
    {
        "ReduceSum",
        "ReduceSumSquare",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceProd",
        "CumSum",
    }
)


MEAN_REDUCTIONS = frozenset(
    {"ReduceMean", "GlobalAveragePool", "GlobalLpPool", "AveragePool", "LpPool"}
)


ALWAYS_FP32_OPS = SUM_REDUCTIONS | frozenset(
    {
        "Exp",
        "Log",
        "Pow",
        "Softmax",
        "LogSoftmax",
        "Softplus",
        "InstanceNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "LpNormalization",
        "MeanVarianceNormalization",
        # output type from an attribute the rewrite does not change
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "EyeLike",
        "Multinomial",
        "Bernoulli",
    }
)


SOFTMAX_OPS = frozenset({"Softmax", "LogSoftmax"})


HEAVY_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "Einsum",
        "LSTM",
        "GRU",
        "RNN",
    }
)


ANY_TYPE_INPUT_OPS = frozenset({"Shape", "Size", "Cast"})  # take any dtype: never cast inputs


@dataclass(frozen=True)
class Fp16Policy:
    """Knobs of the conversion; the defaults are the policy of the module docstring."""

    mean_fp32_elements: int = 256
    fp32_ops: frozenset[str] = ALWAYS_FP32_OPS
    fp32_nodes: frozenset[str] = frozenset()  # node names forced to FP32 (manual override)


@dataclass
class GraphFacts:
    """Element types and shapes of every tensor (after shape inference), and constants."""

    dtypes: dict[str, int]
    shapes: dict[str, list[int | None]]
    constants: dict[str, np.ndarray]
    opset: int


def _dims(value: onnx.ValueInfoProto) -> list[int | None] | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


def graph_facts(model: onnx.ModelProto) -> GraphFacts:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and friends
        raise ExportError(
            f"ONNX shape inference failed before the FP16 conversion ({exc})",
            "this is a bug in the exported graph; report it",
        ) from None
    graph = inferred.graph
    dtypes: dict[str, int] = {}
    shapes: dict[str, list[int | None]] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dtypes[value.name] = value.type.tensor_type.elem_type
        dims = _dims(value)
        if dims is not None:
            shapes[value.name] = dims
    constants: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        dtypes[init.name] = init.data_type
        shapes[init.name] = list(init.dims)
        constants[init.name] = numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    return GraphFacts(dtypes, shapes, constants, opset)


def _attribute(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def reduced_elements(node: onnx.NodeProto, facts: GraphFacts) -> int | None:
    """How many input values feed one output value of a reduction (None: unknown)."""
    shape = facts.shapes.get(node.input[0]) if node.input else None
    op = node.op_type
    if op in ("AveragePool", "LpPool"):
        kernel = _attribute(node, "kernel_shape")
        return int(np.prod(kernel)) if kernel else None
    if shape is None:
        return None
    if op in ("GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool"):
        spatial = shape[2:]
        return None if None in spatial else int(np.prod(spatial))
    if op in SOFTMAX_OPS or op == "CumSum":
        if op == "CumSum":
            axis_values = facts.constants.get(node.input[1]) if len(node.input) > 1 else None
            if axis_values is None:
                return None
            axis = int(np.asarray(axis_values).reshape(-1)[0])
        else:
            axis = int(_attribute(node, "axis", -1))
        return shape[axis % len(shape)] if shape else None
    axes = _attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = facts.constants.get(node.input[1])
        if value is None:
            return None  # axes computed at run time
        axes = [int(v) for v in np.asarray(value).reshape(-1)]
    if not axes:
        if _attribute(node, "noop_with_empty_axes", 0):
            return 1
        axes = list(range(len(shape)))
    dims = [shape[a % len(shape)] for a in axes]
    return None if None in dims else int(np.prod(dims, dtype=np.int64))


def is_reduction(op_type: str) -> bool:
    """Ops whose one output value accumulates many input values (max/min are exact)."""
    return op_type in SUM_REDUCTIONS or op_type in MEAN_REDUCTIONS or op_type in SOFTMAX_OPS


def _schema_allows_fp16(node: onnx.NodeProto, opset: int) -> bool:
    """Whether the op's type constraint for its first float input admits float16."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:  # unknown op (custom domain): leave it alone
        return False
    constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    for formal in [*schema.inputs, *schema.outputs]:
        allowed = constraints.get(formal.type_str)
        if allowed is not None and "tensor(float)" in allowed:
            return "tensor(float16)" in allowed
    return True


def _float_inputs(node: onnx.NodeProto, facts: GraphFacts) -> list[str]:
    return [name for name in node.input if name and facts.dtypes.get(name) == FP32]


def _float_outputs(node: onnx.NodeProto, facts: GraphFacts) -> list[str]:
    return [name for name in node.output if name and facts.dtypes.get(name) == FP32]


def is_filter_conv(node: onnx.NodeProto, facts: GraphFacts) -> bool:
    """A depthwise Conv with one-channel kernels: a fixed filter (MS-SSIM's Gaussian window),
    memory-bound like an element-wise op, so it may join an FP32 region."""
    if node.op_type != "Conv" or len(node.input) < 2:
        return False
    group = int(_attribute(node, "group", 1))
    weight = facts.shapes.get(node.input[1])
    return group > 1 and weight is not None and len(weight) >= 2 and weight[1] == 1


def is_heavy(node: onnx.NodeProto, facts: GraphFacts) -> bool:
    """The learned, compute-dense ops that make the networks: always FP16 unless forced."""
    return node.op_type in HEAVY_OPS and not is_filter_conv(node, facts)


def node_precisions(
    model: onnx.ModelProto, policy: Fp16Policy = Fp16Policy(), facts: GraphFacts | None = None
) -> dict[str, int]:
    """FP16 or FP32 for every node that reads or writes a float tensor, by node name.

    Rules 1-3 of the module docstring force nodes to FP32; then FP32 spreads over light
    (not heavy) nodes until nothing changes: forward to a node that reads a computed FP32
    tensor, and backward to a node whose float results only FP32 nodes read. The networks
    (heavy ops and what lies between them) stay FP16; the score math after their last
    heavy op, MS-SSIM statistics included, becomes FP32.
    """
    facts = facts or graph_facts(model)
    graph = model.graph
    outputs = {value.name for value in graph.output}
    constants = set(facts.constants) | {init.name for init in graph.initializer}
    nodes = [n for n in graph.node if n.op_type != "Constant"]
    nodes = [n for n in nodes if _float_inputs(n, facts) or _float_outputs(n, facts)]
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        if node.op_type in ANY_TYPE_INPUT_OPS:
            continue  # reads any type: puts no constraint on its producer
        for name in _float_inputs(node, facts):
            consumers.setdefault(name, []).append(node)
    fp32 = {n.name for n in nodes if _forced_fp32(n, facts, policy, outputs)}
    changed = True
    while changed:
        before = len(fp32)
        values = {value.name for value in graph.input}  # computed tensors held in FP32
        for node in nodes:  # forward
            light = not is_heavy(node, facts)
            computed = [n for n in _float_inputs(node, facts) if n not in constants]
            if node.name not in fp32 and light and any(n in values for n in computed):
                fp32.add(node.name)
            if node.name in fp32:
                values.update(_float_outputs(node, facts))
        for node in reversed(nodes):  # backward
            if node.name in fp32 or is_heavy(node, facts):
                continue
            readers = [r for out in _float_outputs(node, facts) for r in consumers.get(out, [])]
            if readers and all(r.name in fp32 for r in readers):
                fp32.add(node.name)
        changed = len(fp32) != before
    return {n.name: FP32 if n.name in fp32 else FP16 for n in nodes}


def _forced_fp32(
    node: onnx.NodeProto, facts: GraphFacts, policy: Fp16Policy, outputs: set[str]
) -> bool:
    """Rules 1-3: graph outputs, ops that overflow/underflow, large mean reductions."""
    op = node.op_type
    if node.name in policy.fp32_nodes or any(name in outputs for name in node.output):
        return True
    if op in policy.fp32_ops or not _schema_allows_fp16(node, facts.opset):
        return True
    if op in MEAN_REDUCTIONS:
        count = reduced_elements(node, facts)
        return count is None or count > policy.mean_fp32_elements
    return False


def name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique name: Casts, reports and INT8 exclusions refer to them."""
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{index}"
        while name in seen:
            name = f"{name}_{index}"
        node.name = name
        seen.add(name)


def fp32_island_nodes(model: onnx.ModelProto, policy: Fp16Policy = Fp16Policy()) -> list[str]:
    """Names of the nodes the policy keeps in FP32 (INT8 quantisation excludes them too).

    Node names are those of ``model`` as given: unnamed nodes are not reported.
    """
    precision = node_precisions(model, policy)
    return [name for name, chosen in precision.items() if chosen == FP32 and name]
