"""Shared pytest fixtures. Each section is self-contained; add new sections below."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

# === stream tests: a tiny real ONNX bundle and real digit frames ===========================
# Used by the stream tests of every layer. No torch: the bundle's graph is bundles.mean_model,
# the frames are scikit-learn's real 8x8 digits enlarged to 64x64.

MEAN_BUNDLE_SIZE = 32
DIGIT_FRAME_COUNT = 24
DIGIT_FRAME_SIDE = 64
DIGIT_VIDEO_FPS = 10.0


@pytest.fixture(scope="session")
def mean_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid bundle folder whose score is the mean of the normalised grey 32x32 image.

    Scores lie in [-1, 1]; the card's threshold is 0.0 (a mid-grey frame).
    """
    from bundles import mean_model, write_bundle

    from adedge.preprocess import InputSpec

    return write_bundle(
        tmp_path_factory.mktemp("mean_bundle"),
        mean_model(MEAN_BUNDLE_SIZE),
        InputSpec(MEAN_BUNDLE_SIZE, MEAN_BUNDLE_SIZE, "gray", (0.5,), (0.5,)),
        method="mean",
        threshold=0.0,
        detail="test bundle: mean of the normalised image",
    )


@pytest.fixture(scope="session")
def digit_frames() -> list[np.ndarray]:
    """24 real handwritten digits as BGR uint8 64x64 frames, each with its own tint."""
    from sklearn.datasets import load_digits

    frames = []
    for i, image in enumerate(load_digits().images[:DIGIT_FRAME_COUNT]):
        grey = (image * (255.0 / 16.0)).astype(np.uint8)
        grey = cv2.resize(
            grey, (DIGIT_FRAME_SIDE, DIGIT_FRAME_SIDE), interpolation=cv2.INTER_LINEAR
        )
        tint = np.array([1.0, 0.6 + 0.015 * i, 0.9], np.float32)  # BGR: order must survive
        frames.append((grey[:, :, None] * tint).astype(np.uint8))
    return frames


@pytest.fixture
def digit_folder(tmp_path: Path, digit_frames: list[np.ndarray]) -> Path:
    """A fresh folder of PNGs frame_000.png ... (fresh per test: tests may add bad files)."""
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, frame in enumerate(digit_frames):
        assert cv2.imwrite(str(folder / f"frame_{i:03d}.png"), frame)
    return folder


def _write_video(path: Path, frames: list[np.ndarray], fps: float, codec: str = "MJPG") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, frames[0].shape[1::-1])
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="session")
def digit_video(tmp_path_factory: pytest.TempPathFactory, digit_frames: list[np.ndarray]) -> Path:
    """The digit frames as a real MJPG .avi at 10 fps."""
    folder = tmp_path_factory.mktemp("digit_video")
    return _write_video(folder / "digits.avi", digit_frames, DIGIT_VIDEO_FPS)


@pytest.fixture
def make_video():
    """``make_video(path, frames, fps, codec="MJPG") -> path``: write a real video file."""
    return _write_video


# === end of stream-test fixtures ===========================================================


# --- a real, tiny Y-GAN run and its exported bundle (shared by the CLI/export tests) --------


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Y-GAN, tiny preset, two epochs on scikit-learn digits with '0' anomalous."""
    from adedge.train.trainer import TrainOptions, train

    run = tmp_path_factory.mktemp("runs") / "ygan-tiny"
    train(
        TrainOptions("ygan", "digits:anomaly=0", run, preset="tiny", epochs=2), log=lambda _: None
    )
    return run


@pytest.fixture(scope="session")
def ygan_bundle(tmp_path_factory: pytest.TempPathFactory, trained_run: Path) -> Path:
    from adedge.export.bundle_writer import export_bundle
    from adedge.export.options import ExportOptions

    out = tmp_path_factory.mktemp("models") / "ygan-tiny"
    export_bundle(ExportOptions(trained_run, out), log=lambda _: None)
    return out


# --- Ctrl-C in tests that send themselves SIGINT -------------------------------------------


@pytest.fixture(autouse=True)
def default_sigint():
    """Python's own Ctrl-C handler for every test. A process started in the background by a
    non-interactive shell (``cmd &``, nohup) inherits SIGINT as *ignored*, and Python then
    installs no handler: the SIGINT tests would wait forever for a signal that never lands."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


# --- torch's thread count, to show results do not depend on it -----------------------------


@pytest.fixture(scope="session", autouse=True)
def torch_threads():
    """``ADEDGE_TEST_TORCH_THREADS=N`` runs the suite with torch on N threads (its default is
    every core): run it with two values to see that nothing depends on the machine's cores.
    Where torch is not installed (the runtime venv) there is nothing to set."""
    import os

    value = os.environ.get("ADEDGE_TEST_TORCH_THREADS", "").strip()
    if value:
        try:
            import torch
        except ImportError:
            pass
        else:
            torch.set_num_threads(int(value))
    yield
