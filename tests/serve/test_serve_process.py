"""`adedge serve` as its own process: killed with SIGKILL during an alarm (the broker's last
will says offline; every announced event is in the store; the next start closes the open
one as interrupted), stopped with SIGTERM (open events end as shutdown, clips finished),
and its HTTP health, stats and metrics while it runs."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import cv2
import httpx
import pytest
from conftest import free_port, wait_until
from serve_scenes import (
    camera,
    end_process,
    mqtt_section,
    service_config,
    start_serve_process,
    write_scene,
)

from adedge.runtime.serve.event_types import EndReason, MediaKind
from adedge.runtime.serve.store import EventStore

pytestmark = pytest.mark.runtime

BASE = "adedge/line-test"


def long_alarm_config(tmp_path: Path, bundle: Path, broker, port: int | None = None) -> dict:
    # the defect from frame 10 to the end of a looped 200-frame video: an alarm that lasts
    video = write_scene(tmp_path / "alarm.avi", 200, range(10, 190))
    data = service_config(
        tmp_path, {"cam": camera(video, loop=True)}, bundle, mqtt=mqtt_section(broker)
    )
    if port is not None:
        data["api"] = {"enabled": True, "port": port}
    return data


def new_event_ids(collector) -> list[str]:
    return [
        json.loads(m.payload)["id"]
        for m in collector.on(f"{BASE}/events")
        if json.loads(m.payload)["type"] == "new"
    ]


def test_kill_9_during_an_alarm_loses_nothing(
    tmp_path: Path, bundle: Path, mosquitto, mqtt_collector
) -> None:
    sub = mqtt_collector(mosquitto, [f"{BASE}/#"])
    data = long_alarm_config(tmp_path, bundle, mosquitto)
    process = start_serve_process(tmp_path, data)
    try:
        sub.wait_for_payload(f"{BASE}/available", "online")
        sub.wait_for(lambda ms: new_event_ids(sub), what="an event announced", timeout=60)
    finally:
        code, out = end_process(process, signal.SIGKILL)
    assert code == -signal.SIGKILL, out
    # the broker publishes the last will once the keepalive (5 s) expires
    sub.wait_for_payload(f"{BASE}/available", "offline")
    announced = new_event_ids(sub)
    store = EventStore(Path(data["storage"]["path"]), ["mqtt"], 64 * 1024**2)
    try:
        for event_id in announced:  # committed before it was published
            assert store.get(event_id) is not None
        assert [e.id for e in store.events(in_progress=True)] == [announced[-1]]
    finally:
        store.close()
    # the next start closes the event the killed process left open, and says so
    process = start_serve_process(tmp_path, data)
    try:
        ended = sub.wait_for(
            lambda ms: [
                json.loads(m.payload)
                for m in ms
                if m.topic == f"{BASE}/events"
                and json.loads(m.payload)["type"] == "end"
                and json.loads(m.payload)["id"] == announced[-1]
            ],
            what="the interrupted event's end",
            timeout=60,
        )
    finally:
        code, out = end_process(process)
    assert ended[0]["end_reason"] == EndReason.INTERRUPTED.value
    assert code == 143, out


def test_sigterm_ends_open_events_and_finishes_clips(
    tmp_path: Path, bundle: Path, mosquitto, mqtt_collector
) -> None:
    sub = mqtt_collector(mosquitto, [f"{BASE}/#"])
    port = free_port()
    data = long_alarm_config(tmp_path, bundle, mosquitto, port)
    process = start_serve_process(tmp_path, data)
    url = f"http://127.0.0.1:{port}"
    try:
        sub.wait_for(lambda ms: new_event_ids(sub), what="an event announced", timeout=60)
        ready = wait_until(lambda: _get(f"{url}/api/health/ready").status_code == 200, what="ready")
        assert ready
        stats = httpx.get(f"{url}/api/stats", timeout=10).json()
        assert stats["node"] == "line-test"
        assert stats["cameras"][0]["name"] == "cam" and stats["cameras"][0]["alarm"]
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'adedge_camera_alarm{camera="cam",model="bright"} 1.0' in metrics
    finally:
        code, out = end_process(process, signal.SIGTERM)
    assert code == 143, out
    assert "Traceback" not in out
    (event_id,) = new_event_ids(sub)
    end = sub.wait_for(
        lambda ms: [
            json.loads(m.payload)
            for m in ms
            if m.topic == f"{BASE}/events" and json.loads(m.payload)["type"] == "end"
        ],
        what="the end message sent before exit",
    )[0]
    assert end["id"] == event_id and end["end_reason"] == EndReason.SHUTDOWN.value
    assert sub.last(f"{BASE}/available").text == "offline"
    store = EventStore(Path(data["storage"]["path"]), ["mqtt"], 64 * 1024**2)
    try:
        clip = store.media_path(event_id, MediaKind.CLIP)
        assert clip is not None
        capture = cv2.VideoCapture(str(clip))
        assert capture.isOpened() and capture.get(cv2.CAP_PROP_FRAME_COUNT) > 0
        capture.release()
        assert not list(store.media_dir.rglob(".*"))  # no temporary left behind
        assert store.events(in_progress=True) == []
    finally:
        store.close()


def _get(url: str) -> httpx.Response:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return httpx.Response(599)


def test_the_quick_form_serves_one_camera(tmp_path: Path, bundle: Path) -> None:
    import subprocess
    import sys

    video = write_scene(tmp_path / "v.avi", 30, range(10, 20))
    port = free_port()
    command = ["serve", "--source", str(video), "--model", str(bundle), "--port", str(port)]
    process = subprocess.Popen(
        # the store's folder relative to the working folder, as a user types it
        [sys.executable, "-m", "adedge", *command, "--storage", "store"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        live = f"http://127.0.0.1:{port}/api/health/live"
        wait_until(lambda: _get(live).status_code == 200, what="the service up", timeout=60)
        wait_until(lambda: _events(tmp_path / "store"), what="the scene's event", timeout=30)
    finally:
        code, out = end_process(process)
    assert code == 143, out
    assert "serving 1 camera(s)" in out and "Traceback" not in out and "failed" not in out
    assert list((tmp_path / "store" / "media").rglob("*-snapshot.jpg"))


def _events(store_path: Path) -> list:
    import sqlite3

    with sqlite3.connect(store_path / "events.db") as db:
        return db.execute("SELECT id FROM events WHERE end_time IS NOT NULL").fetchall()
