"""Benchmarks on this machine: a bundle's graphs (``bundle``: `adedge bench`) and the papers'
cases (``papers``, ``report``: `adedge bench --papers`), with the timing (``timing``) and the
FLOP counts (``flops``) they share. Torch-free: the papers' torch models are built by the
export stage (its ``paper_cases``) and handed in."""

from __future__ import annotations

from adedge.runtime.bench.bundle import bench_bundle, render

__all__ = ["bench_bundle", "render"]
