"""A long run of `adedge serve` with its real parts, for the evidence a closing note needs:
RSS at the start and the end, events, and every event message accounted for.

    python benchmarks/soak/serve_soak.py --minutes 30 --out /tmp/soak/result \\
        --model /tmp/soak/cbigan-grass [--outage-s 60]

Four cameras: two synthetic grass streams with defects (the tiled ``--model``, e.g. CBiGAN
trained on ``texture:grass``), a video of a dim surface with a bright defect on known
frames (a brightest-pixel test bundle: one event per defect stretch, for certain), and
``vtest.avi`` looped through the tiled model (load; its threshold is set out of reach so a
street scene does not hold one endless event). A mosquitto broker on 127.0.0.1 and
``mosquitto_sub -v`` record every MQTT message; halfway through, the broker is stopped for
``--outage-s`` seconds. Every minute ``/api/stats`` and the service's RSS are appended to
``samples.jsonl``. At the end the service gets SIGTERM and the report compares the store's
event messages with what the broker delivered (by event id and seq).

Not a test (it runs for minutes); it needs the test helpers (``tests/``) for the bundle.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "serve")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def start_broker(folder: Path, port: int) -> subprocess.Popen[bytes]:
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    process = subprocess.Popen(
        ["/usr/sbin/mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return process


def main() -> None:
    from serve_scenes import brightest_pixel_bundle, write_scene

    from adedge.paths import find_vtest

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="a tiled texture bundle")
    parser.add_argument("--outage-s", type=float, default=60.0)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    vtest = find_vtest()
    bright = brightest_pixel_bundle(out / "bright-bundle")
    scene = write_scene(out / "scene.avi", 100, range(40, 60))
    broker_port, api_port = free_port(), free_port()
    broker = start_broker(out, broker_port)
    sub_log = open(out / "mqtt.log", "w")  # noqa: SIM115 - lives as long as the run
    subscriber = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker_port),
            "-v",
            "-q",
            "1",
            "-c",
            "-i",
            "soak-consumer",
            "-t",
            "adedge/#",
            "-F",
            "%I %t %p",
        ],
        stdout=sub_log,
        stderr=subprocess.STDOUT,
    )
    tex = {"model": "tex", "fps": 5, "alarm": {"k": 1, "n": 1, "cooldown_s": 1.0}}
    config = {
        "node": {"id": "soak"},
        "models": {
            "tex": {"bundle": str(args.model), "max_batch": 64, "max_delay_ms": 5},
            "bright": {"bundle": str(bright)},
        },
        "cameras": {
            "grass1": {"source": "synthetic:texture=grass,size=256,seed=1,defect_every=50", **tex},
            "grass2": {"source": "synthetic:texture=grass,size=256,seed=2,defect_every=50", **tex},
            "scene": {
                "source": str(scene),
                "model": "bright",
                "fps": 10,
                "loop": True,
                "alarm": {"k": 2, "n": 3, "cooldown_s": 0.5},
            },
        },
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "keepalive_s": 10},
        "api": {"port": api_port},
        "storage": {"path": str(out / "store"), "max_bytes": 200 * 1024**2},
    }
    if vtest is not None:
        config["cameras"]["street"] = {
            "source": str(vtest),
            "model": "tex",
            "fps": 5,
            "loop": True,
            "threshold": 1e9,
        }
    (out / "adedge.yaml").write_text(yaml.safe_dump(config))
    log = open(out / "serve.log", "w")  # noqa: SIM115
    service = subprocess.Popen(
        [sys.executable, "-m", "adedge", "serve", "--config", str(out / "adedge.yaml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    started = time.monotonic()
    end = started + 60 * args.minutes
    outage_at = started + 30 * args.minutes
    samples = open(out / "samples.jsonl", "w")  # noqa: SIM115
    outage_done = False
    first_rss = None
    try:
        while time.monotonic() < end:
            time.sleep(5 if first_rss is None else 60)
            try:
                stats = httpx.get(f"http://127.0.0.1:{api_port}/api/stats", timeout=10).json()
            except httpx.HTTPError as error:
                stats = {"error": str(error)}
            rss = rss_kib(service.pid)
            first_rss = first_rss or rss
            samples.write(
                json.dumps(
                    {"t_s": round(time.monotonic() - started), "rss_kib": rss, "stats": stats}
                )
                + "\n"
            )
            samples.flush()
            if not outage_done and time.monotonic() >= outage_at:
                broker.terminate()
                broker.wait()
                time.sleep(args.outage_s)
                broker = start_broker(out, broker_port)
                outage_done = True
        last_rss = rss_kib(service.pid)
    finally:
        service.send_signal(signal.SIGTERM)
        code = service.wait(60)
        time.sleep(3)
        subscriber.terminate()
        broker.terminate()
    report(out, code, first_rss, last_rss, args)


def report(out: Path, code: int, first_rss, last_rss, args) -> None:
    db = sqlite3.connect(out / "store" / "events.db")
    events = db.execute("SELECT id, camera, next_seq, data FROM events").fetchall()
    expected = {(event_id, seq) for event_id, _, next_seq, _ in events for seq in range(next_seq)}
    delivered = set()
    for line in (out / "mqtt.log").read_text(errors="replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] == "adedge/soak/events":
            message = json.loads(parts[2])
            delivered.add((message["id"], message["seq"]))
    outbox = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    by_camera: dict[str, int] = {}
    reasons: dict[str, int] = {}
    pruned = 0
    for _, camera, _, data in events:
        by_camera[camera] = by_camera.get(camera, 0) + 1
        parsed = json.loads(data)
        reasons[parsed["end_reason"] or "open"] = reasons.get(parsed["end_reason"] or "open", 0) + 1
        pruned += bool(parsed["media_pruned"])
    result = {
        "minutes": args.minutes,
        "exit_code": code,
        "rss_kib_start": first_rss,
        "rss_kib_end": last_rss,
        "events": len(events),
        "events_by_camera": by_camera,
        "end_reasons": reasons,
        "media_pruned": pruned,
        "messages_in_store": len(expected),
        "messages_delivered": len(delivered & expected),
        "missing": sorted(expected - delivered)[:20],
        "outbox_left": outbox,
        "broker_outage_s": args.outage_s,
    }
    (out / "report.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
