"""Cameras whose outcome is certain, for the service's tests: a video of a dim surface with
a bright round defect on known frames, scored by a bundle whose score is the brightest
pixel (threshold 0.5), so every defect stretch is exactly one event."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from bundles import tile_max_model, write_bundle, write_tile_bundle

DEFECT_CENTRE = (60, 30)  # x, y in a 96x96 frame
DEFECT_RADIUS = 6
SIDE = 96


def scene_frame(defect: bool, side: int = SIDE) -> np.ndarray:
    """The defect scales with the frame, so it stays bright once resized to the model."""
    frame = np.full((side, side, 3), 40, np.uint8)
    if defect:
        scale = side / SIDE
        centre = (round(DEFECT_CENTRE[0] * scale), round(DEFECT_CENTRE[1] * scale))
        cv2.circle(frame, centre, round(DEFECT_RADIUS * scale), (255, 255, 255), -1)
        if side > SIDE:  # texture for the JPEG evidence to weigh something
            noise = np.random.default_rng(0).integers(0, 60, frame.shape, dtype=np.uint8)
            frame = cv2.add(frame, noise)
    return frame


def write_scene(path: Path, frames: int, defects: range, side: int = SIDE) -> Path:
    """An MJPG .avi of ``frames`` frames, the defect on those in ``defects``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (side, side))
    for index in range(frames):
        writer.write(scene_frame(index in defects, side))
    writer.release()
    return path


def brightest_pixel_bundle(folder: Path) -> Path:
    """Whole-frame bundle: score = brightest pixel in [0, 1], heatmap = the frame."""
    return write_tile_bundle(folder, None, size=64)


def half_bright_bundle(folder: Path) -> Path:
    """The scenes' bundle scaled by 1/2, with threshold 0.25: same decisions, other scores."""
    from adedge.preprocess import InputSpec

    spec = InputSpec(64, 64, "gray", (0.0,), (2.0,))
    return write_bundle(
        folder,
        tile_max_model(64),
        spec,
        method="tile-max",
        threshold=0.25,
        detail="test bundle: half the brightest pixel",
        stage="local",
        outputs=("score", "amap"),
        tiling=None,
        reduce="max",
    )


def camera(source: Path | str, **options: Any) -> dict[str, Any]:
    """A camera section: fps 25 unless given, an alarm of 2 of 3 frames, short evidence."""
    section: dict[str, Any] = {
        "source": str(source),
        "model": "bright",
        "fps": 25,
        "alarm": {"k": 2, "n": 3, "cooldown_s": 0.2},
        "evidence": {"pre_s": 0.4, "post_s": 0.4},
    }
    section.update(options)
    return section


def service_config(
    tmp: Path, cameras: dict[str, dict[str, Any]], bundle: Path, **sections: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "node": {"id": "line-test"},
        "models": {"bright": {"bundle": str(bundle), "max_delay_ms": 2}},
        "cameras": cameras,
        "api": {"enabled": False},
        "storage": {"path": str(tmp / "store"), "max_bytes": 64 * 1024**2},
    }
    data.update(sections)
    return data


def mqtt_section(broker: Any, **options: Any) -> dict[str, Any]:
    return {"host": broker.host, "port": broker.port, "keepalive_s": 5, **options}


@contextlib.contextmanager
def running_service(data: dict[str, Any]) -> Iterator[Any]:
    """A Service from config data, started, and stopped at the end of the block."""
    from adedge.runtime.serve.config import parse_config
    from adedge.runtime.serve.service import Service

    log: list[str] = []
    service = Service(parse_config(data), log.append)
    service.log_lines = log
    service.start()
    try:
        yield service
    finally:
        service.stop()


def start_serve_process(tmp: Path, data: dict[str, Any]) -> subprocess.Popen[str]:
    """``adedge serve --config`` in its own process (for kill -9 and SIGTERM)."""
    config = tmp / "adedge.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "adedge", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def end_process(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    """Send ``sig`` and collect the exit code and output (SIGKILL after 30 s)."""
    process.send_signal(sig)
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return process.returncode, out
