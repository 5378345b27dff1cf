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


# === a real Triton server (nvidia-pytriton's tritonserver) ==================================


TRITON_TILING = (128, 96, 32)  # a 4 x 3 grid of 32 px tiles: 12 tiles per frame
TRITON_TILES = 12


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory, mean_bundle: Path):
    """A tritonserver on free 127.0.0.1 ports serving, through its Python backend, the mean
    bundle and a tiled one (one model ``<bundle>_<stage>`` each); yields
    ``(server, {"mean": bundle, "tiles": bundle}, {"mean": model, "tiles": model})``.
    Skips only when .venv-pytriton is absent (make pytriton-venv)."""
    from triton_server import pytriton_missing, start_server

    missing = pytriton_missing()
    if missing:
        pytest.skip(missing)
    from bundles import two_stage_bundle, write_tile_bundle
    from triton_python_repo import write_python_repository

    from adedge.bundle import TilingSpec
    from adedge.export.triton_repo import RepoOptions

    scratch = tmp_path_factory.mktemp("triton")
    height, width, tile = TRITON_TILING
    tiling = TilingSpec((height, width), tile, tile)
    tiles = write_tile_bundle(scratch / "tiles", tiling)
    bundles: dict[str, Path] = {"mean": mean_bundle, "tiles": tiles}
    # the tiled model waits up to 100 ms for 48 rows (4 frames of 12 tiles): requests of
    # clients sending together are batched by Triton, which its metrics show
    batching = RepoOptions(
        max_batch=4 * TRITON_TILES,
        preferred=(4 * TRITON_TILES,),
        queue_delay_us=100_000,
        instance_kind="cpu",
    )
    models = {
        "mean": write_python_repository([mean_bundle], scratch / "repo")[0],
        "tiles": write_python_repository([tiles], scratch / "repo", batching)[0],
    }
    bundles["two"] = two_stage_bundle(scratch / "two", tiling, global_weight=0.5)
    models["two"] = write_python_repository([bundles["two"]], scratch / "repo")[-1]
    server = start_server(scratch / "repo", scratch)
    try:
        yield server, bundles, models
    finally:
        server.stop()
