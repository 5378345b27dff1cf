"""Which layers of an INT8 (QDQ) graph ONNX Runtime really runs as integer kernels.

A QDQ graph only *describes* quantised layers (DequantizeLinear -> FP32 Conv ->
QuantizeLinear); ONNX Runtime's graph optimiser fuses each such group into an integer kernel
(``QLinearConv``, ``QGemm``...) when its selector accepts it, and otherwise runs the FP32 op
between a dequantise and a quantise: slower than the FP32 graph. So the count that matters
is the one in the graph ONNX Runtime optimises, written with ``optimized_model_filepath``.

Torch-free; ``onnx`` (the ``bench`` and ``export`` extras) is imported when counting.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

CONVOLUTIONS = ("Conv", "ConvTranspose")
MATMULS = ("Gemm", "MatMul")
INTEGER_CONVOLUTIONS = ("QLinearConv", "QLinearConvTranspose", "ConvInteger")
INTEGER_MATMULS = ("QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "MatMulInteger")


@dataclass(frozen=True)
class Fusion:
    """Convolutions (and matmuls) of a QDQ graph: all of them, those the quantiser quantised
    (a DequantizeLinear feeds their weight), and the integer kernels ONNX Runtime made."""

    convolutions: int
    quantised_convolutions: int
    fused_convolutions: int
    matmuls: int
    quantised_matmuls: int
    fused_matmuls: int

    @property
    def fused_share(self) -> float:
        """Fused convolutions over quantised ones (1.0 where none is quantised)."""
        if not self.quantised_convolutions:
            return 1.0
        return self.fused_convolutions / self.quantised_convolutions

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _op_counts(path: Path) -> Counter:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def _quantised(path: Path, ops: tuple[str, ...], operands: slice) -> tuple[int, int]:
    """(nodes of ``ops``, those whose ``operands`` (their weight; a matmul's two factors)
    a DequantizeLinear writes)."""
    import onnx

    graph = onnx.load(str(path)).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    nodes = [node for node in graph.node if node.op_type in ops]
    quantised = [
        node
        for node in nodes
        if all(producers.get(name) == "DequantizeLinear" for name in node.input[operands])
    ]
    return len(nodes), len(quantised)


def optimised_graph(path: Path, target: Path) -> None:
    """Write the graph ONNX Runtime's CPU provider runs for ``path`` (QDQ fusion is an
    *extended* optimisation; the hardware-specific layout passes are left out)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.intra_op_num_threads = 1
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def count_fusion(path: Path) -> Fusion:
    """The :class:`Fusion` of the QDQ graph ``path`` on this ONNX Runtime."""
    convolutions, quantised_convolutions = _quantised(path, CONVOLUTIONS, slice(1, 2))
    matmuls, quantised_matmuls = _quantised(path, MATMULS, slice(0, 2))
    with tempfile.TemporaryDirectory() as folder:
        optimised = Path(folder) / "optimised.onnx"
        optimised_graph(path, optimised)
        ops = _op_counts(optimised)
    return Fusion(
        convolutions,
        quantised_convolutions,
        sum(ops[op] for op in INTEGER_CONVOLUTIONS),
        matmuls,
        quantised_matmuls,
        sum(ops[op] for op in INTEGER_MATMULS),
    )
