"""The service side of the serve benchmark, in a process of its own so that its memory is
measured the way the ``adedge stream`` processes' is:

    python -m adedge.runtime.bench.serve_worker CONFIG.json WARMUP_S SECONDS

starts :class:`~adedge.runtime.serve.service.Service` from the JSON config, waits until every
camera has scored a frame, lets it run ``WARMUP_S``, then counts each camera's frames scored
in the next ``SECONDS``; prints one JSON object (:class:`ServiceRun` fields) on stdout and
stops the service. A camera that errors or ends before the window is a one-line failure
(exit 2).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from adedge.errors import AdedgeError

FIRST_FRAME_TIMEOUT_S = 180.0  # model load and first batch on a slow, busy machine


@dataclass
class CameraRun:
    """One camera in the window: frames scored, their rate, and its latency p99 (from the
    frame read to its score, over the camera's last 512 frames)."""

    name: str
    frames: int
    fps: float
    p99_ms: float | None


@dataclass
class ServiceRun:
    cameras: list[CameraRun]
    window_s: float
    rss_peak_kb: int  # VmHWM of this process
    rss_kb: int  # VmRSS at the end of the window


def proc_status_kb(pid: int | str, field: str) -> int:
    """``field`` (VmHWM, VmRSS) of /proc/<pid>/status in kB; 0 where it cannot be read."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_service(config_path: Path, warmup: float, seconds: float) -> ServiceRun:
    from adedge.runtime.serve.config import parse_config
    from adedge.runtime.serve.service import Service
    from adedge.runtime.serve.stats import CameraState

    config = parse_config(json.loads(config_path.read_text(encoding="utf-8")))
    service = Service(config, lambda line: print(line, file=sys.stderr, flush=True))
    service.start()
    try:
        deadline = time.monotonic() + FIRST_FRAME_TIMEOUT_S
        while True:
            stats = service.camera_stats()
            failed = [s for s in stats if s.state in (CameraState.ERROR, CameraState.ENDED)]
            if failed:
                camera = failed[0]
                raise AdedgeError(
                    f"camera {camera.name} is {camera.state.value} before the window: "
                    f"{camera.error or 'no reason given'}",
                    "check the bundle and the source with adedge stream",
                )
            if all(s.frames_scored > 0 for s in stats):
                break
            if time.monotonic() > deadline:
                raise AdedgeError(
                    f"not every camera scored a frame within {FIRST_FRAME_TIMEOUT_S:.0f} s",
                    "check the bundle and the sources with adedge stream",
                )
            time.sleep(0.05)
        time.sleep(warmup)
        start = time.monotonic()
        before = {s.name: s.frames_scored for s in service.camera_stats()}
        time.sleep(seconds)
        after = service.camera_stats()
        window = time.monotonic() - start
        cameras = [
            CameraRun(s.name, s.frames_scored - before[s.name], 0.0, s.latency_p99_ms)
            for s in after
        ]
        for camera in cameras:
            camera.fps = camera.frames / window
        return ServiceRun(
            cameras, window, proc_status_kb("self", "VmHWM"), proc_status_kb("self", "VmRSS")
        )
    finally:
        service.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m adedge.runtime.bench.serve_worker CONFIG.json WARMUP_S SECONDS",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        result = run_service(Path(argv[0]), float(argv[1]), float(argv[2]))
    except AdedgeError as error:
        print(f"error: {error.one_line()}", file=sys.stderr, flush=True)
        return 2
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
