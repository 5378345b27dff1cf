"""The roofs a graph is measured against, each measured in the same run on the same threads:

* FP32: numpy's float32 matmul rate (``timing.sgemm_gflops``);
* INT8: ONNX Runtime's own 8-bit matrix product (``MatMulInteger``, uint8 x int8 -> int32,
  the MLAS kernel family its ``QLinearConv`` uses), 2 x M x N x K operations per call;
* memory: a copy of arrays far larger than the last-level cache (bytes read + bytes written
  per second), split over the threads.

A graph's roof is the lower of its precision's compute roof and bandwidth x its arithmetic
intensity (FLOPs per byte moved, ``flops.traffic_bytes``): an INT8 graph is no longer
measured against the FP32 peak (it read 277% and 464% of it), and a graph of narrow layers
that moves many bytes per FLOP is measured against the memory it needs.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from adedge.runtime.bench.timing import sgemm_gflops

COPY_MIB = 256  # per array: far above any CPU's last-level cache
GEMM_SIZE = 1024


@dataclass(frozen=True)
class Roofs:
    """This machine's roofs on ``threads`` threads (GFLOP/s, GOP/s, GB/s)."""

    threads: int
    fp32_gflops: float
    int8_gops: float
    memory_gbs: float

    @classmethod
    def best_of(cls, runs: list[Roofs]) -> Roofs:
        """Each roof's highest measurement over ``runs`` (same threads)."""
        return cls(
            runs[0].threads,
            max(r.fp32_gflops for r in runs),
            max(r.int8_gops for r in runs),
            max(r.memory_gbs for r in runs),
        )

    def compute(self, precision: str) -> float:
        return self.int8_gops if precision == "int8" else self.fp32_gflops

    def roof(self, precision: str, intensity: float | None) -> float:
        """The attainable rate of a graph of ``precision`` and ``intensity`` FLOP/byte."""
        compute = self.compute(precision)
        if intensity is None:
            return compute
        return min(compute, self.memory_gbs * intensity)

    def bound(self, precision: str, intensity: float | None) -> str:
        if intensity is None or self.memory_gbs * intensity >= self.compute(precision):
            return "compute"
        return "memory"


def memory_gbs(threads: int, seconds: float = 1.0) -> float:
    """Copy bandwidth (read + write bytes per second) over ``threads`` threads, best run."""
    count = COPY_MIB * 2**20 // 4
    source = np.ones(count, np.float32)
    target = np.empty_like(source)
    parts = np.array_split(np.arange(count), max(threads, 1))
    bounds = [(int(p[0]), int(p[-1]) + 1) for p in parts if len(p)]

    def copy(span: tuple[int, int]) -> None:
        np.copyto(target[span[0] : span[1]], source[span[0] : span[1]])

    best, deadline = 0.0, time.perf_counter() + seconds
    with ThreadPoolExecutor(len(bounds)) as pool:
        list(pool.map(copy, bounds))  # touch every page first
        while time.perf_counter() < deadline or best == 0.0:
            start = time.perf_counter()
            list(pool.map(copy, bounds))
            best = max(best, 2 * source.nbytes / (time.perf_counter() - start) / 1e9)
    return best


def int8_gemm_gops(threads: int, seconds: float = 2.0, size: int = GEMM_SIZE) -> float:
    """ONNX Runtime's uint8 x int8 matrix product rate on ``threads`` threads (GOP/s)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-127, 128, (size, size), np.int8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8_gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    a = rng.integers(0, 256, (size, size), np.uint8)
    session.run(None, {"a": a})
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs == 0:
        session.run(None, {"a": a})
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9


def measure_roofs(threads: int, seconds: float = 2.0) -> Roofs:
    return Roofs(
        threads,
        sgemm_gflops(threads, seconds=seconds),
        int8_gemm_gops(threads, seconds),
        memory_gbs(threads, seconds / 2),
    )
