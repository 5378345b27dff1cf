"""The shared engine: frames of several cameras scored in one batch, the same scores as
scoring each frame alone, round-robin fairness, a full queue, a model that fails to load."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from bundles import defect_frame, write_tile_bundle

from adedge.bundle import TilingSpec
from adedge.errors import AdedgeError
from adedge.runtime.detector import Detector
from adedge.runtime.serve.engine import QUEUE_PER_CAMERA, Busy, SharedEngine
from adedge.runtime.serve.stats import ModelState

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def tiled_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiled")
    return write_tile_bundle(folder, TilingSpec(tile=32, stride=32, resize_to=(64, 64)))


def engine_for(bundle: Path, max_batch: int = 64, delay_ms: float = 50.0) -> SharedEngine:
    batches: list[tuple[int, int]] = []
    engine = SharedEngine(
        "m",
        lambda: Detector(bundle, threads=1),
        max_batch,
        delay_ms,
        observe=lambda frames, rows, seconds: batches.append((frames, rows)),
    )
    engine.batches = batches  # type: ignore[attr-defined]
    assert engine.load()
    return engine


def frames(count: int) -> list[np.ndarray]:
    base = defect_frame(64, 64)
    return [np.roll(base, 7 * i, axis=1) for i in range(count)]


def test_frames_of_many_cameras_share_a_batch_and_score_as_alone(tiled_bundle: Path) -> None:
    engine = engine_for(tiled_bundle)
    cameras = [f"cam{i}" for i in range(4)]
    for camera in cameras:
        engine.add_camera(camera)
    images = frames(4)
    # queued before the thread starts: the first batch holds all four
    futures = [engine.submit(c, im) for c, im in zip(cameras, images, strict=True)]
    engine.start()
    try:
        results = [f.result(timeout=30) for f in futures]
    finally:
        engine.stop()
    assert engine.batches == [(4, 16)]  # 4 frames x 4 tiles of 32 px at 64x64
    alone = Detector(tiled_bundle, threads=1).score_frames(images)
    for got, want in zip(results, alone, strict=True):
        assert got.result.score == pytest.approx(want.score, abs=1e-6)
        assert got.batch_frames == 4


def test_round_robin_gives_every_waiting_camera_a_frame_per_batch(tiled_bundle: Path) -> None:
    # max_batch of 8 rows = 2 frames of 4 tiles: with three cameras waiting, batches rotate
    engine = engine_for(tiled_bundle, max_batch=8)
    for camera in ("a", "b", "c"):
        engine.add_camera(camera)
    order: list[str] = []
    futures = []
    for _ in range(QUEUE_PER_CAMERA):
        for camera in ("a", "b", "c"):
            future = engine.submit(camera, frames(1)[0])
            future.add_done_callback(lambda f, c=camera: order.append(c))
            futures.append(future)
    engine.start()
    try:
        for future in futures:
            future.result(timeout=30)
    finally:
        engine.stop()
    assert [frames for frames, _ in engine.batches] == [2, 2, 2]
    # no camera is served twice before every other waiting camera was served once
    assert order == ["a", "b", "c", "a", "b", "c"]


def test_a_full_camera_queue_is_busy_not_blocking(tiled_bundle: Path) -> None:
    engine = engine_for(tiled_bundle)
    engine.add_camera("cam")
    for _ in range(QUEUE_PER_CAMERA):
        engine.submit("cam", frames(1)[0])
    with pytest.raises(Busy):
        engine.submit("cam", frames(1)[0])
    engine.start()
    engine.stop()


def test_a_model_that_fails_to_load_answers_with_its_error(tmp_path: Path) -> None:
    engine = SharedEngine("broken", lambda: Detector(tmp_path / "missing"), 8, 1.0)
    assert not engine.load()
    assert engine.state is ModelState.ERROR
    assert engine.error and "missing" in engine.error
    engine.add_camera("cam")
    with pytest.raises(AdedgeError, match="failed to load"):
        engine.submit("cam", frames(1)[0])


def test_many_threads_submitting_all_get_their_own_result(tiled_bundle: Path) -> None:
    engine = engine_for(tiled_bundle, max_batch=16, delay_ms=2.0)
    cameras = [f"cam{i}" for i in range(6)]
    for camera in cameras:
        engine.add_camera(camera)
    engine.start()
    images = frames(6)
    want = [r.score for r in Detector(tiled_bundle, threads=1).score_frames(images)]
    errors: list[str] = []

    def worker(i: int) -> None:
        for _ in range(20):
            score = engine.submit(cameras[i], images[i]).result(timeout=30).result.score
            if abs(score - want[i]) > 1e-6:
                errors.append(f"{cameras[i]}: {score} != {want[i]}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.stop()
    assert errors == []
    assert engine.stats.frames == 120
    assert engine.stats.batches < 120  # frames of different cameras shared batches


def test_a_batch_closes_once_every_active_camera_has_a_frame(tiled_bundle: Path) -> None:
    # a minute of max_delay_ms: were the engine to wait for it, no result would come in 30 s
    engine = engine_for(tiled_bundle, max_batch=256, delay_ms=60_000)
    for camera in ("a", "b"):
        engine.add_camera(camera)
        engine.activate(camera)
    engine.start()
    try:
        first = engine.submit("a", frames(1)[0])
        second = engine.submit("b", frames(1)[0])
        assert first.result(timeout=30).batch_frames in (1, 2)
        assert second.result(timeout=30).result.score > 0
        engine.activate("b", False)  # b's source closed: a alone fills a batch now
        assert engine.submit("a", frames(1)[0]).result(timeout=30).batch_frames == 1
    finally:
        engine.stop()
