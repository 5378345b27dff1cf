"""8 cameras through one Triton server vs 8 local ONNX Runtime streams, on the same cores, and
what the client spends per frame.

Both sides score the same frames (tests/triton_camera_frames.py: 256x192 BGR frames cut into 12
tiles of 32 px) with the tiled test bundle of tests/bundles.py (brightest pixel + identity
map: a near-free graph, so this measures what serving costs, not the model). Local: 8
threads, one Detector each (ONNX Runtime, one thread). Triton: nvidia-pytriton's
tritonserver on 127.0.0.1, the stage's ONNX graph run by ONNX Runtime inside its Python
backend (the wheel has no onnxruntime_onnx backend: a real one skips the Python stub's
shared-memory hop), dynamic batching up to 96 rows with a 2 ms queue delay; 8 threads, one
Detector (one client) each, over KServe v2 REST (``triton+http://``) and over gRPC
(``triton://``). Phases alternate local/REST/gRPC for ``--rounds``. Torch-free:

    .venv-runtime/bin/python benchmarks/triton_cameras.py [--frames 60] [--rounds 3]

writes ``benchmarks/results/triton_cameras.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bundles import write_tile_bundle  # noqa: E402
from triton_camera_frames import camera_frame  # noqa: E402
from triton_python_repo import write_python_repository  # noqa: E402
from triton_server import pytriton_missing, start_server  # noqa: E402

from adedge.bundle import TilingSpec  # noqa: E402
from adedge.export.triton_repo import RepoOptions  # noqa: E402
from adedge.runtime.backends.triton import open_transport  # noqa: E402
from adedge.runtime.detector import Detector  # noqa: E402
from adedge.triton_address import parse_triton_address  # noqa: E402

CAMERAS = 8


def frames_per_second(detectors: list[Detector], frames: dict[int, list[np.ndarray]]) -> float:
    start = threading.Barrier(len(detectors) + 1)

    def camera(c: int) -> None:
        start.wait()
        for frame in frames[c]:
            detectors[c].score_frames([frame])

    threads = [threading.Thread(target=camera, args=(c,)) for c in range(len(detectors))]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return sum(len(f) for f in frames.values()) / (time.perf_counter() - began)


def counter(metrics: str, name: str, model: str) -> float:
    found = re.search(rf'^{name}\{{model="{model}",version="1"\}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


def client_costs(addresses: dict[str, str], detector: Detector, frame: np.ndarray, n: int) -> dict:
    """ms per frame of one client alone: adedge's preprocessing, building the REST request
    body, and the whole round trip over each protocol (request, queue delay, Python
    backend, response, decode)."""
    stage = detector.stages[0]
    batch, _ = stage.prepare([frame], "bgr")
    began = time.perf_counter()
    for _ in range(n):
        stage.prepare([frame], "bgr")
    costs = {"prepare_ms": (time.perf_counter() - began) / n * 1e3}
    began = time.perf_counter()
    for _ in range(n):
        head = json.dumps({"inputs": [{"name": "image", "shape": list(batch.shape)}]}).encode()
        b"".join([head, batch.tobytes()])
    costs["encode_ms"] = (time.perf_counter() - began) / n * 1e3
    for protocol, spec in addresses.items():
        address = parse_triton_address(spec)
        transport = open_transport(address, 10.0, 0.0)
        transport.infer(address.model, {"image": batch}, ["score", "amap"])  # connect
        began = time.perf_counter()
        for _ in range(n):
            transport.infer(address.model, {"image": batch}, ["score", "amap"])
        costs[f"round_trip_{protocol}_ms"] = (time.perf_counter() - began) / n * 1e3
        transport.close()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames per camera per phase")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    missing = pytriton_missing()
    if missing:
        sys.exit(missing)
    scratch = Path(tempfile.mkdtemp(prefix="adedge-triton-bench-"))
    bundle = write_tile_bundle(scratch / "tiles", TilingSpec((128, 96), 32, 32))
    options = RepoOptions(max_batch=96, preferred=(96,), queue_delay_us=2000, instance_kind="cpu")
    (model,) = write_python_repository([bundle], scratch / "repo", options)
    frames = {c: [camera_frame(c, i) for i in range(args.frames)] for c in range(CAMERAS)}
    server = start_server(scratch / "repo", scratch)
    try:
        addresses = {"http": server.address(model, "http"), "grpc": server.address(model, "grpc")}
        local = [Detector(bundle, threads=1) for _ in range(CAMERAS)]
        remote = {
            protocol: [Detector(None, backend=address) for _ in range(CAMERAS)]
            for protocol, address in addresses.items()
        }
        for detectors in remote.values():
            frames_per_second(detectors, frames)  # warm-up (connections, the stub)
        before = server.metrics()
        results: dict[str, list[float]] = {"local": [], "http": [], "grpc": []}
        for _ in range(args.rounds):
            results["local"].append(frames_per_second(local, frames))
            for protocol, detectors in remote.items():
                results[protocol].append(frames_per_second(detectors, frames))
        after = server.metrics()
        names = ("nv_inference_request_success", "nv_inference_exec_count")
        batching = {n: counter(after, n, model) - counter(before, n, model) for n in names}
        costs = client_costs(addresses, remote["http"][0], frames[0][0], 200)
        for detectors in remote.values():
            for detector in detectors:
                detector.close()
    finally:
        server.stop()
    report = {
        "cores": os.cpu_count(),
        "cameras": CAMERAS,
        "frames_per_camera_per_phase": args.frames,
        "fps_median": {k: statistics.median(v) for k, v in results.items()},
        "fps_rounds": results,
        "triton_requests": batching["nv_inference_request_success"],
        "triton_batches": batching["nv_inference_exec_count"],
        "one_client": costs,
    }
    out = ROOT / "benchmarks" / "results"
    (out / "triton_cameras.json").write_text(json.dumps(report, indent=2) + "\n")
    fps = report["fps_median"]
    lines = [
        "# 8 cameras: one Triton server vs local ONNX Runtime",
        "",
        f"`.venv-runtime/bin/python benchmarks/triton_cameras.py --frames {args.frames} "
        f"--rounds {args.rounds}` on {os.cpu_count()} cores (server and clients together).",
        "",
        "| | frames/s (median) |",
        "|---|---|",
        f"| 8 local ONNX Runtime streams | {fps['local']:.0f} |",
        f"| 8 cameras through one Triton (Python backend), KServe REST | {fps['http']:.0f} |",
        f"| 8 cameras through one Triton (Python backend), gRPC | {fps['grpc']:.0f} |",
        "",
        f"Triton ran {report['triton_requests']:.0f} requests in "
        f"{report['triton_batches']:.0f} batches (both protocols). One client alone, per "
        f"frame: preprocessing {costs['prepare_ms']:.2f} ms, REST request body "
        f"{costs['encode_ms']:.3f} ms, round trip {costs['round_trip_http_ms']:.2f} ms over "
        f"REST and {costs['round_trip_grpc_ms']:.2f} ms over gRPC.",
        "",
    ]
    (out / "triton_cameras.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
