"""FP32 -> mixed-precision FP16 ONNX: the graph rewrite (docs/architecture.md, Precision).

TensorRT 11 builds only strongly typed networks: the precision of every tensor is the one
the ONNX graph gives it. So precision lives in the graph, and this module writes it: FP16
weights and activations, with FP32 *islands* where FP16 overflows (max 65504), underflows
(smallest normal 6.1e-5) or loses the digits a score needs. The graph's inputs and outputs
keep their FP32 types, so the card and the runtime do not change.

Which node runs in which precision is :mod:`adedge.export.fp16_policy` (``node_precisions``).

Cast nodes are inserted where a tensor's type differs from what its consumer runs in (one
Cast per tensor and target type, shared by all consumers); initializers and ``Constant``
values get an FP16 twin when an FP16 node reads them. Weights beyond the FP16 range are
clipped to +-65504 and counted in the report (the parity check then decides). ``Resize``'s
``roi``/``scales`` stay FP32 (the schema fixes ``scales`` to float).

ONNX Runtime's CPU provider runs FP16 graphs, but by running most ops in FP32 and dropping
the Casts around them: FP16 weights, yet neither rounding nor overflow of FP16 activations.
``emulate_fp16`` therefore writes an FP32 twin that rounds every FP16 tensor through explicit
Casts, and the export checks parity on both.

The lint and the CPU emulation of FP16 are :mod:`adedge.export.fp16_checks`.

The parity gate the export applies to this graph is :mod:`adedge.export.parity`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from adedge.errors import ExportError
from adedge.export.fp16_policy import (
    ANY_TYPE_INPUT_OPS,
    FP16,
    FP32,
    Fp16Policy,
    GraphFacts,
    graph_facts,
    name_nodes,
    node_precisions,
)

FP16_MAX = float(np.finfo(np.float16).max)


FP32_INPUTS = frozenset({("Resize", 1), ("Resize", 2), ("Upsample", 1)})


CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})


@dataclass
class Fp16Report:
    """What the conversion did: node counts per precision, the FP32 islands and Casts."""

    fp16_nodes: int = 0
    fp32_nodes: list[str] = field(default_factory=list)
    casts: int = 0
    clipped_weights: int = 0
    fp16_weights: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "fp16_nodes": self.fp16_nodes,
            "fp32_nodes": len(self.fp32_nodes),
            "fp32_island_nodes": self.fp32_nodes,
            "casts_inserted": self.casts,
            "fp16_weights": self.fp16_weights,
            "clipped_weights": self.clipped_weights,
        }


def _check_supported(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        if node.op_type in CONTROL_FLOW_OPS:
            raise ExportError(
                f"the graph has a {node.op_type} node ({node.name}); the FP16 conversion "
                "handles graphs without control flow only",
                "make the method's inference module free of data-dependent control flow",
            )


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """``Constant`` nodes with float values become initializers (they then get FP16 twins)."""
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1:
            attr = node.attribute[0]
            value = None
            if attr.name == "value" and attr.t.data_type == FP32:
                value = numpy_helper.to_array(attr.t)
            elif attr.name in ("value_float", "value_floats"):
                value = np.asarray(helper.get_attribute_value(attr), dtype=np.float32)
            if value is not None:
                graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
                continue
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def to_fp16_array(values: np.ndarray) -> tuple[np.ndarray, int]:
    """FP16 copy of FP32 values, clipped to the FP16 range; also the count clipped."""
    clipped = int(np.count_nonzero(np.abs(values) > FP16_MAX))
    return np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16), clipped


class _Rewriter:
    """Builds the new node list with Casts and FP16 twins of constants."""

    def __init__(self, graph: onnx.GraphProto, facts: GraphFacts, report: Fp16Report) -> None:
        self.graph = graph
        self.facts = facts
        self.report = report
        self.initializers = {init.name: init for init in graph.initializer}
        self.twins: dict[str, str] = {}
        self.casts: dict[tuple[str, int], str] = {}
        self.types: dict[str, int] = {value.name: FP32 for value in graph.input}
        self.nodes: list[onnx.NodeProto] = []
        self.used_fp32_initializers: set[str] = set()
        names = {n for node in graph.node for n in [*node.input, *node.output]}
        self.taken = names | set(self.initializers) | {v.name for v in graph.input}

    def fresh(self, base: str) -> str:
        name, index = base, 1
        while name in self.taken:
            name, index = f"{base}_{index}", index + 1
        self.taken.add(name)
        return name

    def twin(self, name: str) -> str:
        """The FP16 initializer holding ``name``'s values."""
        if name not in self.twins:
            values, clipped = to_fp16_array(numpy_helper.to_array(self.initializers[name]))
            twin = self.fresh(f"{name}_fp16")
            self.graph.initializer.append(numpy_helper.from_array(values, twin))
            self.report.clipped_weights += clipped
            self.report.fp16_weights += int(values.size)
            self.twins[name] = twin
        return self.twins[name]

    def cast(self, name: str, to: int) -> str:
        key = (name, to)
        if key not in self.casts:
            suffix = "fp16" if to == FP16 else "fp32"
            out = self.fresh(f"{name}_to_{suffix}")
            node_name = self.fresh(f"Cast_{out}")
            self.nodes.append(helper.make_node("Cast", [name], [out], name=node_name, to=to))
            self.casts[key] = out
            self.report.casts += 1
        return self.casts[key]

    def input_for(self, name: str, expected: int) -> str:
        if name in self.initializers:
            if expected == FP16:
                return self.twin(name)
            self.used_fp32_initializers.add(name)
            return name
        actual = self.types.get(name, FP32)
        return name if actual == expected else self.cast(name, expected)

    def add(self, node: onnx.NodeProto, precision: int | None) -> None:
        facts = self.facts
        if precision is None:  # integer-only node: untouched
            for name in node.input:
                if name in self.initializers:
                    self.used_fp32_initializers.add(name)
            self.nodes.append(node)
            return
        any_type = node.op_type in ANY_TYPE_INPUT_OPS
        for index, name in enumerate(node.input):
            if not name or facts.dtypes.get(name) != FP32:
                if name in self.initializers:
                    self.used_fp32_initializers.add(name)
                continue
            if any_type:
                if name in self.initializers:
                    self.used_fp32_initializers.add(name)
                continue
            expected = FP32 if (node.op_type, index) in FP32_INPUTS else precision
            node.input[index] = self.input_for(name, expected)
        if precision == FP16:
            self._retype_attributes(node)
        for name in node.output:
            if name and facts.dtypes.get(name) == FP32:
                self.types[name] = precision
        self.nodes.append(node)

    @staticmethod
    def _retype_attributes(node: onnx.NodeProto) -> None:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == FP32:
                attr.i = FP16
            constant = node.op_type == "ConstantOfShape" and attr.name == "value"
            if constant and attr.t.data_type == FP32:
                values, _ = to_fp16_array(numpy_helper.to_array(attr.t))
                attr.t.CopyFrom(numpy_helper.from_array(values, attr.t.name))


def convert_to_mixed_fp16(
    model: onnx.ModelProto, policy: Fp16Policy = Fp16Policy()
) -> tuple[onnx.ModelProto, Fp16Report]:
    """A mixed-precision copy of an FP32 model (inputs and outputs stay FP32)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    _check_supported(graph)
    name_nodes(graph)
    _constants_to_initializers(graph)
    facts = graph_facts(model)
    precision = node_precisions(model, policy, facts)
    report = Fp16Report()
    rewriter = _Rewriter(graph, facts, report)
    for node in graph.node:
        chosen = precision.get(node.name)
        rewriter.add(node, chosen)
        if chosen == FP16:
            report.fp16_nodes += 1
        elif chosen == FP32:
            report.fp32_nodes.append(node.name)
    for value in graph.output:  # rule 1 keeps them FP32; a pass-through still gets a Cast
        if rewriter.types.get(value.name, FP32) != FP32:
            raise ExportError(
                f"graph output '{value.name}' would be FP16", "this is a bug in adedge; report it"
            )
    del graph.node[:]
    graph.node.extend(rewriter.nodes)
    keep = rewriter.used_fp32_initializers | set(rewriter.twins.values())
    kept = [init for init in graph.initializer if init.name in keep]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model, report
