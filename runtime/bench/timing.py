"""Timing on this machine: repeated calls after a warm-up, and the machine's own float32 matmul
rate as the reference peak. Speed lives in benchmarks, never in timed assertions; only
ratios measured side by side in one run mean something."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def time_call(run: Callable[[], Any], seconds: float, min_runs: int = 5) -> np.ndarray:
    """Wall times (s) of ``run()`` after one warm-up call: at least ``min_runs`` calls, and
    as many more as fit in ``seconds``."""
    run()
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def machine() -> str:
    """This machine in a few words: processor and cores."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def sgemm_gflops(threads: int, size: int = 1024, seconds: float = 2.0) -> float:
    """This machine's float32 matmul rate through numpy's BLAS on ``threads`` threads: the
    reference peak (ONNX Runtime's own GEMM may beat it, so fractions can pass 100%)."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    with threadpool_limits(threads):
        a @ a
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ a
            runs += 1
        return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9
