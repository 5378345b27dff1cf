"""The two sides of one serve-benchmark case, each run in processes of its own:

- the service: one ``python -m adedge.runtime.bench.serve_worker`` process (the real
  :class:`~adedge.runtime.serve.service.Service`, one shared engine for the N cameras);
- the processes: N ``python -m adedge stream --jsonl -`` processes started together, one per
  camera; their records are read from their pipes as they arrive, each stamped on arrival.

Both wait until every camera has scored a frame, run ``warmup`` seconds more, then count the
frames scored in the next ``seconds``. Latency is from the frame read to its score: the
service's own per-camera p99; for a process, its arrival on the pipe minus the record's
``time`` (when the frame was read). Memory is the peak RSS (VmHWM) of each process,
read from /proc when the window ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from adedge.errors import AdedgeError
from adedge.runtime.bench.serve_worker import FIRST_FRAME_TIMEOUT_S, proc_status_kb

FRAME_PREFIX = b'{"type": "frame"'  # how JsonlSink writes a frame record
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class CameraSpec:
    """One camera of a case: its source URI, and whether a file source loops."""

    source: str
    loop: bool


@dataclass(frozen=True)
class RunSettings:
    """How each side runs: the measured window and the warm-up before it (seconds), ONNX
    Runtime threads (0: every core) and backend for every process, and the service
    engine's batching (None: the config's defaults)."""

    seconds: float = 10.0
    warmup: float = 3.0
    threads: int = 0
    backend: str = "onnxruntime"
    max_batch: int | None = None
    max_delay_ms: float | None = None


@dataclass
class SideResult:
    """One side of a case: each camera's scored fps in the window, the worst camera's p99
    latency, and the peak RSS of the side's process(es) summed."""

    per_camera_fps: list[float]
    p99_ms: float | None
    rss_peak_mb: float

    @property
    def fps(self) -> float:
        return float(sum(self.per_camera_fps))

    @property
    def min_fps(self) -> float:
        return min(self.per_camera_fps)

    @property
    def max_fps(self) -> float:
        return max(self.per_camera_fps)

    @property
    def fairness(self) -> float | None:
        """min/max per-camera scored fps (1: every camera served alike)."""
        return self.min_fps / self.max_fps if self.max_fps > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fps": self.fps,
            "per_camera_fps": self.per_camera_fps,
            "min_fps": self.min_fps,
            "max_fps": self.max_fps,
            "fairness": self.fairness,
            "p99_ms": self.p99_ms,
            "rss_peak_mb": self.rss_peak_mb,
        }


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _worst(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


# --- the service ------------------------------------------------------------------------


def service_config(
    bundle: Path, cameras: list[CameraSpec], settings: RunSettings, storage: Path
) -> dict[str, Any]:
    """The service's config for a case: one model, N cameras unpaced, no HTTP, no alarms,
    no clip pre-roll (see :mod:`adedge.runtime.bench.serve`)."""
    model: dict[str, Any] = {
        "bundle": str(bundle),
        "backend": settings.backend,
        "threads": settings.threads,
    }
    if settings.max_batch is not None:
        model["max_batch"] = settings.max_batch
    if settings.max_delay_ms is not None:
        model["max_delay_ms"] = settings.max_delay_ms
    return {
        "models": {"model": model},
        "cameras": {
            f"cam{index}": {
                "source": camera.source,
                "model": "model",
                "loop": camera.loop,
                "threshold": NO_ALARM_THRESHOLD,
                "evidence": {"clip": False},  # no pre-roll: no event can use it
            }
            for index, camera in enumerate(cameras)
        },
        "api": {"enabled": False},
        "storage": {"path": str(storage), "min_free_bytes": 0},
    }


NO_ALARM_THRESHOLD = 1e30  # above every score: both sides score, neither writes events


def run_service_side(
    bundle: Path, cameras: list[CameraSpec], settings: RunSettings, workdir: Path
) -> SideResult:
    """The N cameras through one service process (see the module docstring)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "serve.json"
    config.write_text(json.dumps(service_config(bundle, cameras, settings, workdir / "store")))
    errors = workdir / "service.stderr"
    command = [
        sys.executable, "-m", "adedge.runtime.bench.serve_worker",
        str(config), str(settings.warmup), str(settings.seconds),
    ]  # fmt: skip
    limit = FIRST_FRAME_TIMEOUT_S + settings.warmup + settings.seconds + STOP_TIMEOUT_S
    with open(errors, "wb") as stderr:
        try:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, timeout=limit)
        except subprocess.TimeoutExpired:
            raise AdedgeError(
                f"the service did not finish within {limit:.0f} s ({_tail(errors)})",
                "check the bundle with adedge stream, or lower --seconds",
            ) from None
    if done.returncode != 0:
        raise AdedgeError(
            f"the service failed (exit {done.returncode}): {_tail(errors) or 'no message'}",
            "check the bundle and the sources with adedge stream",
        )
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return SideResult(
        [float(camera["fps"]) for camera in result["cameras"]],
        _worst([camera["p99_ms"] for camera in result["cameras"]]),
        result["rss_peak_kb"] / 1024.0,
    )


# --- the processes ----------------------------------------------------------------------


def stream_command(bundle: Path, camera: CameraSpec, settings: RunSettings) -> list[str]:
    """``adedge stream`` for one camera, records on stdout, as the service scores it."""
    command = [
        sys.executable, "-m", "adedge", "stream",
        "--source", camera.source, "--model", str(bundle),
        "--backend", settings.backend, "--threads", str(settings.threads),
        "--threshold", repr(NO_ALARM_THRESHOLD),
        "--jsonl", "-", "--quiet", "--headless",
    ]  # fmt: skip
    return command + (["--loop"] if camera.loop else [])


class _Records:
    """A stream process's frame records as they arrive: (arrival Unix time, raw line)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.arrived: list[tuple[float, bytes]] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        for line in pipe:
            if line.startswith(FRAME_PREFIX):
                self.arrived.append((time.time(), line))

    def join(self) -> None:
        self._thread.join(STOP_TIMEOUT_S)

    def window(self, start: float, end: float) -> tuple[int, float | None]:
        """Frames that arrived in [start, end) and their p99 latency (ms)."""
        latencies = []
        for arrived, line in list(self.arrived):
            if start <= arrived < end:
                read = datetime.fromisoformat(json.loads(line)["time"]).timestamp()
                latencies.append(max(0.0, arrived - read) * 1e3)
        p99 = float(np.percentile(latencies, 99)) if latencies else None
        return len(latencies), p99


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_process_side(
    bundle: Path, cameras: list[CameraSpec], settings: RunSettings, workdir: Path
) -> SideResult:
    """The N cameras through N ``adedge stream`` processes (see the module docstring)."""
    workdir.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    records: list[_Records] = []
    logs = [workdir / f"stream{index}.stderr" for index in range(len(cameras))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for camera, log in zip(cameras, logs, strict=True):
            with open(log, "wb") as stderr:
                process = subprocess.Popen(
                    stream_command(bundle, camera, settings),
                    stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, env=env,
                )  # fmt: skip
            processes.append(process)
            assert process.stdout is not None
            records.append(_Records(process.stdout))
        _wait_first_frames(processes, records, logs)
        time.sleep(settings.warmup)
        start = time.time()
        time.sleep(settings.seconds)
        end = time.time()
        rss_kb = [proc_status_kb(process.pid, "VmHWM") for process in processes]
    finally:
        _stop(processes)
        for reader in records:
            reader.join()
    counted = [reader.window(start, end) for reader in records]
    window = end - start
    return SideResult(
        [frames / window for frames, _ in counted],
        _worst([p99 for _, p99 in counted]),
        sum(rss_kb) / 1024.0,
    )


def _wait_first_frames(
    processes: list[subprocess.Popen[bytes]], records: list[_Records], logs: list[Path]
) -> None:
    deadline = time.monotonic() + FIRST_FRAME_TIMEOUT_S
    while not all(reader.arrived for reader in records):
        for process, reader, log in zip(processes, records, logs, strict=True):
            if not reader.arrived and process.poll() is not None:
                raise AdedgeError(
                    f"an adedge stream process ended (exit {process.returncode}) before its "
                    f"first frame: {_tail(log) or 'no message'}",
                    "check the bundle and the source with adedge stream",
                )
        if time.monotonic() > deadline:
            raise AdedgeError(
                f"not every adedge stream process scored a frame within "
                f"{FIRST_FRAME_TIMEOUT_S:.0f} s",
                "check the bundle and the sources with adedge stream",
            )
        time.sleep(0.05)
