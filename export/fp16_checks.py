"""Checks of a mixed-precision FP16 graph without a GPU: the lint that finds reductions left
in FP16, and the emulation that makes ONNX Runtime's CPU provider round every FP16 tensor as
an FP16 engine would.

The lint (``lint_fp16``) reports every reduction node (Reduce*, global/average pooling,
softmax) that would run in FP16 over more than ``LINT_ELEMENTS`` (4096) elements, or over
an unknown number. Our conversion never produces one (the export asserts it), but graphs
converted by other tools (onnxconverter-common's ``convert_float_to_float16``, hand edits)
are checked the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from adedge.export.fp16 import Fp16Report, convert_to_mixed_fp16
from adedge.export.fp16_policy import (
    FP16,
    FP32,
    Fp16Policy,
    graph_facts,
    is_reduction,
    name_nodes,
    reduced_elements,
)

LINT_ELEMENTS = 4096


@dataclass(frozen=True)
class LintFinding:
    """A reduction that would run in FP16 over ``elements`` values (None: unknown)."""

    node: str
    op_type: str
    elements: int | None

    def describe(self) -> str:
        size = "an unknown number of" if self.elements is None else f"{self.elements}"
        return f"{self.node} ({self.op_type}) reduces {size} elements in FP16"


def lint_fp16(model: onnx.ModelProto | Path, limit: int = LINT_ELEMENTS) -> list[LintFinding]:
    """Every reduction node that runs in FP16 over more than ``limit`` (or unknown) values."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    facts = graph_facts(model)
    findings = []
    for node in model.graph.node:
        if not is_reduction(node.op_type) or not node.input:
            continue
        if facts.dtypes.get(node.input[0]) != FP16:
            continue
        count = reduced_elements(node, facts)
        if count is None or count > limit:
            findings.append(LintFinding(node.name or node.op_type, node.op_type, count))
    return findings


def describe_findings(findings: Iterable[LintFinding]) -> str:
    return "; ".join(finding.describe() for finding in findings)


def emulate_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP32 graph that rounds every FP16 tensor of the mixed graph ``model`` to FP16.

    ONNX Runtime's CPU provider has FP16 kernels for few ops: it runs the others in FP32 and
    removes the Casts around them ("precision-free casts"), so an FP16 graph on the CPU keeps
    FP16 weights but neither the rounding nor the overflow of FP16 activations (a sum that
    overflows to inf in FP16 comes out finite). Here every node computes in FP32 and every
    tensor the mixed graph holds in FP16 passes through an explicit Cast to FP16 and back,
    which ONNX Runtime keeps: storage rounding and overflow (inf) as an FP16 engine has them,
    with FP32 accumulation inside each op (as TensorRT's FP16 kernels mostly do).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    name_nodes(graph)
    facts = graph_facts(model)
    taken = {n for node in graph.node for n in [*node.input, *node.output]}
    taken |= {init.name for init in graph.initializer}
    for init in graph.initializer:
        if init.data_type == FP16:
            values = numpy_helper.to_array(init).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(values, init.name))
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for attr in node.attribute:
            constant = node.op_type == "ConstantOfShape" and attr.name == "value"
            if constant and attr.t.data_type == FP16:
                values = numpy_helper.to_array(attr.t).astype(np.float32)
                attr.t.CopyFrom(numpy_helper.from_array(values, attr.t.name))
        rounded = []
        for index, name in enumerate(node.output):
            if name and facts.dtypes.get(name) == FP16:
                raw = name
                while raw in taken:
                    raw = f"{raw}_fp32"
                taken.add(raw)
                node.output[index] = raw
                rounded.append((raw, name))
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == FP16:
                    attr.i = FP32  # the rounding pair below does the FP16 part
        nodes.append(node)
        for raw, name in rounded:
            half = f"{raw}_as_fp16"
            nodes.append(helper.make_node("Cast", [raw], [half], to=FP16))
            nodes.append(helper.make_node("Cast", [half], [name], to=FP32))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def write_fp16(
    source: Path, target: Path, policy: Fp16Policy = Fp16Policy()
) -> tuple[Fp16Report, list[LintFinding]]:
    """Write the mixed-precision twin of the FP32 graph ``source``; also its lint findings."""
    model, report = convert_to_mixed_fp16(onnx.load(str(source)), policy)
    findings = lint_fp16(model)
    onnx.save(model, str(target))
    return report, findings
