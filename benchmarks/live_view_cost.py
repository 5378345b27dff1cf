"""What the console's live view costs the service: scored fps with no viewer, with one MJPEG
client at the default 5 fps, and with one at the 15 fps cap, side by side in one run.

One :class:`~adedge.runtime.serve.service.Service` (in this process, its HTTP API on a free
port of 127.0.0.1) scores 4 cameras reading vtest.avi (768x576) looped and unpaced, through
the tiled stand-in bundle of ``adedge bench --serve`` (64 tiles of 64 px, ~2 GFLOP/frame,
with an anomaly map: the live view draws its heatmap). After a warm-up the phases run in
turn, each a fixed window, in the order 0, 5, 15, 15, 5, 0, ... (mirrored every round, so a
drift of the machine falls on every phase alike). A viewer is a separate process (as a
browser would be) reading ``/api/cameras/cam0/stream.mjpeg`` with httpx and counting the
parts. Torch-free:

    .venv-runtime/bin/python benchmarks/live_view_cost.py [--seconds 20] [--rounds 4]

writes ``benchmarks/results/serve_live_view.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import onnxruntime

from adedge.paths import find_vtest
from adedge.runtime.bench.serve_models import write_standin_bundles
from adedge.runtime.serve.api_types import LiveFrame
from adedge.runtime.serve.config import parse_config
from adedge.runtime.serve.live_view import LIVE_JPEG_QUALITY, LiveImages, Overlay
from adedge.runtime.serve.service import Service

CAMERAS = 4
RESULTS = Path(__file__).parent / "results" / "serve_live_view"
COMMAND = ".venv-runtime/bin/python benchmarks/live_view_cost.py"
NO_ALARM = 1e30  # no event fires: the run measures scoring and the live view only
FIRST_FRAME_S = 180.0

# A viewer: reads the stream for SECONDS, prints "open" at its first bytes, then its count.
VIEWER = r"""
import json, sys, time, httpx
url, seconds = sys.argv[1], float(sys.argv[2])
parts = size = 0
with httpx.stream("GET", url, timeout=30) as answer:
    answer.raise_for_status()
    deadline = None
    for chunk in answer.iter_bytes():
        if deadline is None:
            print("open", flush=True)
            deadline = time.monotonic() + seconds
        parts += chunk.count(b"--frame\r\n")
        size += len(chunk)
        if time.monotonic() > deadline:
            break
print(json.dumps({"parts": parts, "bytes": size}), flush=True)
"""


@dataclass
class Phase:
    viewer_fps: float  # 0: no viewer
    window_s: float
    frames: int  # frames scored by the 4 cameras in the window
    fps: float
    cam0_fps: float
    cpu_s_per_s: float  # this process's CPU seconds per wall second (the service)
    parts: int | None  # MJPEG parts the viewer received in its window
    viewer_cpu_s: float | None  # the viewer process's CPU seconds
    encoded: int  # live frames the service drew and encoded in the window
    encode_cpu_s: float  # the CPU time of that (the encoding threads' own time)


def config(bundle: Path, video: Path, storage: Path) -> dict[str, Any]:
    return {
        "node": {"id": "live-view-bench"},
        "models": {"tiled": {"bundle": str(bundle)}},
        "cameras": {
            f"cam{index}": {
                "source": str(video),
                "model": "tiled",
                "loop": True,
                "threshold": NO_ALARM,
                "evidence": {"clip": False},
            }
            for index in range(CAMERAS)
        },
        "api": {"enabled": True, "port": 0},
        "storage": {"path": str(storage), "min_free_bytes": 0},
    }


def scored(service: Service) -> dict[str, int]:
    return {stats.name: stats.frames_scored for stats in service.camera_stats()}


def wait_first_frames(service: Service) -> None:
    deadline = time.monotonic() + FIRST_FRAME_S
    while not all(count > 0 for count in scored(service).values()):
        if time.monotonic() > deadline:
            raise SystemExit(f"not every camera scored a frame in {FIRST_FRAME_S:g} s")
        time.sleep(0.1)


def live_encoding(service: Service) -> tuple[int, float]:
    """(frames encoded, their CPU seconds) by the app's live images so far."""
    assert service.api is not None
    images = getattr(service.api.app.state, "live_images", None)
    return (0, 0.0) if images is None else (images.encoded, images.encode_cpu_s)


def run_phase(service: Service, port: int, viewer_fps: float, seconds: float) -> Phase:
    viewer = None
    if viewer_fps:
        url = f"http://127.0.0.1:{port}/api/cameras/cam0/stream.mjpeg?fps={viewer_fps:g}"
        before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        viewer = subprocess.Popen(
            [sys.executable, "-c", VIEWER, url, str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert viewer.stdout is not None
        opened = viewer.stdout.readline().strip()
        if opened != "open":
            raise SystemExit(f"the viewer did not get the stream: {opened!r}")
    start, cpu = time.monotonic(), time.process_time()
    before, encoding = scored(service), live_encoding(service)
    time.sleep(seconds)
    after, encoded = scored(service), live_encoding(service)
    window = time.monotonic() - start
    cpu_used = time.process_time() - cpu
    frames = sum(after.values()) - sum(before.values())
    parts = viewer_cpu = None
    if viewer is not None:
        out, _ = viewer.communicate(timeout=60)
        parts = json.loads(out.strip().splitlines()[-1])["parts"]
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        viewer_cpu = (used.ru_utime + used.ru_stime) - (
            before_children.ru_utime + before_children.ru_stime
        )
    return Phase(
        viewer_fps,
        round(window, 3),
        frames,
        frames / window,
        (after["cam0"] - before["cam0"]) / window,
        cpu_used / window,
        parts,
        viewer_cpu,
        encoded[0] - encoding[0],
        encoded[1] - encoding[1],
    )


def encode_cost(frame: LiveFrame, repeats: int = 40) -> dict[str, float]:
    """Median ms to draw and encode one live frame, with and without the heatmap."""
    result = {}
    for overlay in Overlay:
        times = []
        for number in range(repeats):
            images = LiveImages()  # a fresh cache: every call encodes
            copy = LiveFrame(
                number + 1, frame.wall, frame.image, frame.amap, frame.score, 1.0, False
            )
            began = time.perf_counter()
            images.jpeg("cam0", copy, overlay)
            times.append(time.perf_counter() - began)
        result[overlay.value] = 1e3 * statistics.median(times)
    return result


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def summary(phases: list[Phase]) -> dict[str, dict[str, float]]:
    by_fps: dict[float, list[Phase]] = {}
    for phase in phases:
        by_fps.setdefault(phase.viewer_fps, []).append(phase)
    base = statistics.mean(p.fps for p in by_fps[0.0])
    table = {}
    for fps, group in sorted(by_fps.items()):
        mean = statistics.mean(p.fps for p in group)
        table[f"{fps:g}"] = {
            "fps_mean": mean,
            "fps_min": min(p.fps for p in group),
            "fps_max": max(p.fps for p in group),
            "ratio": mean / base,
            "cam0_fps_mean": statistics.mean(p.cam0_fps for p in group),
            "cpu_s_per_s": statistics.mean(p.cpu_s_per_s for p in group),
            "cpu_ms_per_frame": 1e3
            * sum(p.cpu_s_per_s * p.window_s for p in group)
            / max(1, sum(p.frames for p in group)),
            "parts_per_s": statistics.mean((p.parts or 0) / p.window_s for p in group),
            "encode_cpu_share": statistics.mean(p.encode_cpu_s / p.window_s for p in group),
            "encode_cpu_ms": 1e3
            * sum(p.encode_cpu_s for p in group)
            / max(1, sum(p.encoded for p in group)),
            "viewer_cpu_s_per_s": statistics.mean(
                (p.viewer_cpu_s or 0.0) / p.window_s for p in group
            ),
        }
    return table


def share(report: dict[str, Any], fps: str) -> str:
    """The share of one core the viewer's parts cost to draw and encode."""
    parts = report["summary"].get(fps, {}).get("parts_per_s", 0.0)
    return f"{report['encode_ms']['heatmap'] * parts / 10:.1f}%"


def markdown(report: dict[str, Any]) -> str:
    rows = report["summary"]
    lines = [
        "# The live view's cost: scored fps with and without an MJPEG viewer",
        "",
        "One service (in the benchmark's process, HTTP API on 127.0.0.1) scoring 4 cameras",
        "(vtest.avi 768x576, looped, unpaced) through the tiled stand-in bundle of",
        "`adedge bench --serve` (64 tiles of 64 px, ~2 GFLOP/frame, with a heatmap); no event",
        "fires. Phases of "
        f"{report['seconds']:g} s after a {report['warmup']:g} s warm-up, in the order "
        f"{', '.join(f'{p:g}' for p in report['order'])} (viewer fps; 0: no viewer), so a",
        "drift of the machine falls on every phase alike. The viewer is a separate process",
        "(httpx) reading `/api/cameras/cam0/stream.mjpeg?fps=N` and counting the parts; it",
        "only reads: a browser decoding the JPEGs would be on another machine.",
        "",
        "## The run",
        "",
        f"    {report['command']}",
        "",
        f"- Machine: {report['machine']['nproc']} cores (`nproc`), {report['machine']['cpu']};",
        f"  Python {report['machine']['python']}, onnxruntime {report['machine']['onnxruntime']},"
        f" OpenCV {report['machine']['opencv']}.",
        f"- Load (`uptime`) before: {report['load_before']}; after: {report['load_after']}.",
        f"- Drawing and encoding one 768x576 live frame (JPEG quality {LIVE_JPEG_QUALITY}),"
        f" median: {report['encode_ms']['heatmap']:.1f} ms with the heatmap,"
        f" {report['encode_ms']['none']:.1f} ms without; times the parts sent a second,"
        f" {share(report, '5')} of one core at fps=5 and {share(report, '15')} at fps=15"
        " (a second viewer of the same camera shares the encoded parts).",
        "",
        "| viewer | scored fps, 4 cameras (mean) | min-max over phases | ratio to no viewer "
        "| cam0 fps | service CPU s/s | service CPU ms/frame | parts/s received "
        "| live view CPU s/s (ms/part) | viewer CPU s/s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for fps, row in rows.items():
        name = "none" if fps == "0" else f"1 client, fps={fps}"
        lines.append(
            f"| {name} | {row['fps_mean']:.1f} | {row['fps_min']:.1f}-{row['fps_max']:.1f} | "
            f"{row['ratio']:.3f} | {row['cam0_fps_mean']:.1f} | {row['cpu_s_per_s']:.2f} | "
            f"{row['cpu_ms_per_frame']:.1f} | {row['parts_per_s']:.1f} | "
            f"{row['encode_cpu_share']:.3f} ({row['encode_cpu_ms']:.1f}) | "
            f"{row['viewer_cpu_s_per_s']:.3f} |"
        )
    lines += [
        "",
        "Reading it: scored fps on a 2-core machine moves with whatever else runs (see the",
        "load and the min-max over phases); the ratio is only as good as that spread. The",
        "live view's own cost is measured apart from it: the CPU time of the threads that",
        "draw and encode the parts (`LiveImages.encode_cpu_s`), per second and per part. A",
        "stream sends at most one part per frame scored, so a viewer asking 15 fps of a",
        "camera scored at fewer gets that camera's rate (cam0 fps above).",
        "",
        "Every phase (JSON beside this file: `serve_live_view.json`):",
        "",
        "| # | viewer fps | scored fps | cam0 fps | service CPU s/s | parts |",
        "|--:|--:|--:|--:|--:|--:|",
    ]
    for number, phase in enumerate(report["phases"], 1):
        parts = "" if phase["parts"] is None else str(phase["parts"])
        lines.append(
            f"| {number} | {phase['viewer_fps']:g} | {phase['fps']:.1f} | "
            f"{phase['cam0_fps']:.1f} | {phase['cpu_s_per_s']:.2f} | {parts} |"
        )
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="each phase's window")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the three phases")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results path, no suffix")
    args = parser.parse_args()
    video = find_vtest()
    if video is None:
        raise SystemExit("vtest.avi not found: `make system-deps` fetches it")
    order: list[float] = []
    for number in range(args.rounds):
        order += [0.0, 5.0, 15.0] if number % 2 == 0 else [15.0, 5.0, 0.0]
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="adedge-live-view-") as tmp:
        bundle = write_standin_bundles(Path(tmp) / "bundles").tiled
        data = config(bundle, video, Path(tmp) / "store")
        service = Service(parse_config(data), lambda line: print(line, file=sys.stderr))
        service.start()
        try:
            assert service.api is not None
            wait_first_frames(service)
            time.sleep(args.warmup)
            phases = []
            for viewer_fps in order:
                phase = run_phase(service, service.api.port, viewer_fps, args.seconds)
                print(json.dumps(asdict(phase)), file=sys.stderr, flush=True)
                phases.append(phase)
            frame = service.live_frame("cam0")
            assert frame is not None
            encode_ms = encode_cost(frame)
        finally:
            service.stop()
    report = {
        "command": COMMAND
        + (
            ""
            if args.seconds == 20 and args.rounds == 4
            else f" --seconds {args.seconds:g} --rounds {args.rounds}"
        ),
        "seconds": args.seconds,
        "warmup": args.warmup,
        "order": order,
        "machine": machine(),
        "load_before": load_before,
        "load_after": load_average(),
        "encode_ms": encode_ms,
        "summary": summary(phases),
        "phases": [asdict(phase) for phase in phases],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
