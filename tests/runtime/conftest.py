"""Fixtures of the runtime's tests (the shared bundles and frames are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adedge.runtime.detector import Detector


@pytest.fixture(scope="module")
def detector(mean_bundle: Path) -> Detector:
    """The tiny mean bundle's detector, on one ONNX Runtime thread: a 32x32 mean gains nothing
    from a thread pool, and the stream's own threads are what these tests watch."""
    return Detector(mean_bundle, threads=1)
