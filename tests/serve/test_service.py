"""The service end to end with real parts: video cameras, the shared engine, events with
evidence in SQLite, a real mosquitto broker and a real webhook receiver."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import first_occurrences, message_key, wait_until
from serve_scenes import (
    DEFECT_CENTRE,
    camera,
    mqtt_section,
    running_service,
    service_config,
    write_scene,
)
from video_files import read_video

from adedge.runtime.serve.event_types import EndReason, MediaKind
from adedge.runtime.serve.stats import CameraState, DropReason

pytestmark = pytest.mark.runtime

BASE = "adedge/line-test"


def event_messages(collector, topic: str = f"{BASE}/events") -> list[dict]:
    return [json.loads(m.payload) for m in collector.on(topic)]


def test_one_defect_is_one_event_with_evidence_on_mqtt_and_webhook(
    tmp_path: Path, bundle: Path, mosquitto, mqtt_collector, webhook_receiver
) -> None:
    video = write_scene(tmp_path / "line.avi", 40, range(15, 25))
    sub = mqtt_collector(mosquitto, [f"{BASE}/#"])
    data = service_config(
        tmp_path,
        {"line1": camera(video)},
        bundle,
        mqtt=mqtt_section(mosquitto),
        webhooks={"qa": {"url": webhook_receiver.url(), "headers": {"X-Token": "s3cret"}}},
    )
    with running_service(data) as service:
        sub.wait_for(
            lambda ms: any(
                json.loads(m.payload)["type"] == "end" for m in ms if "events" in m.topic
            ),
            what="the event's end message",
        )
        webhook_receiver.wait_for(lambda rs: any(r.json()["type"] == "end" for r in rs))
        stats = service.camera_stats()[0]
        wait_until(lambda: service.cameras["line1"].state is CameraState.ENDED, what="the end")
        store = service.store
        (event,) = store.events()
        snapshot = store.media_path(event.id, MediaKind.SNAPSHOT)
        clip = store.media_path(event.id, MediaKind.CLIP)
        heatmap = store.media_path(event.id, MediaKind.HEATMAP)
        raw = store.media_path(event.id, MediaKind.FRAME)
        assert None not in (snapshot, clip, heatmap, raw)
        snapshot_image = cv2.imread(str(snapshot))
        capture = cv2.VideoCapture(str(clip))
        clip_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
    messages = event_messages(sub)
    assert [m["type"] for m in messages][0] == "new" and messages[-1]["type"] == "end"
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    assert {m["id"] for m in messages} == {event.id}
    assert messages[-1]["end_reason"] == EndReason.NORMAL.value
    assert messages[-1]["media"]["clip"].endswith(".mp4")
    hooks = [r for r in webhook_receiver.accepted()]
    assert [r.json() for r in hooks] == messages  # the same objects, in the same order
    assert hooks[0].headers["X-Token"] == "s3cret"
    # the defect is outlined where it is: the box holds the circle's centre
    box = event.box
    assert box is not None
    assert box.x <= DEFECT_CENTRE[0] <= box.x + box.width
    assert box.y <= DEFECT_CENTRE[1] <= box.y + box.height
    assert box.width * box.height < 0.1 * 96 * 96
    assert snapshot_image is not None and snapshot_image.shape[:2] == (96, 96)
    assert clip_frames >= 10  # the defect's 10 frames at least, with pre- and post-roll
    assert event.frames >= 8 and event.peak_score > 0.9
    assert stats.frames_scored > 0
    # the live topics: alarm state went alarm -> normal, status online, snapshot retained
    states = [m.text for m in sub.on(f"{BASE}/line1/state")]
    assert states[-2:] == ["alarm", "normal"]
    assert sub.last(f"{BASE}/line1/snapshot").payload[:2] == b"\xff\xd8"
    assert "online" in [m.text for m in sub.on(f"{BASE}/line1/status")]
    assert sub.last(f"{BASE}/available").text == "offline"  # after the clean stop


def test_threshold_and_detect_over_mqtt(
    tmp_path: Path, bundle: Path, mosquitto, mqtt_collector
) -> None:
    video = write_scene(tmp_path / "loop.avi", 30, range(10, 20))
    sub = mqtt_collector(mosquitto, [f"{BASE}/#"])
    data = service_config(
        tmp_path, {"cam": camera(video, loop=True)}, bundle, mqtt=mqtt_section(mosquitto)
    )
    with running_service(data) as service:
        cam = service.cameras["cam"]
        sub.wait_for_payload(f"{BASE}/cam/threshold/state", "0.5")
        sub.publish(f"{BASE}/cam/threshold/set", "2")
        sub.wait_for_payload(f"{BASE}/cam/threshold/state", "2")
        assert cam.stats().threshold == 2.0
        events_before = cam.recorder.events_total
        scored = cam.frames_scored
        wait_until(lambda: cam.frames_scored > scored + 40, what="two defect stretches")
        # no score reaches 2: no new event while the threshold is 2 (one may have been open)
        assert cam.recorder.events_total <= events_before + 0
        sub.publish(f"{BASE}/cam/detect/set", "OFF")
        sub.wait_for_payload(f"{BASE}/cam/detect/state", "off")
        wait_until(
            lambda: cam.stats().drops.get(DropReason.DETECT_OFF, 0) > 5,
            what="frames read with detection off",
        )
        sub.publish(f"{BASE}/nosuchcam/threshold/set", "1")  # ignored, nothing breaks
        sub.publish(f"{BASE}/cam/threshold/set", "abc")  # refused, the threshold stays
        sub.publish(f"{BASE}/cam/detect/set", "on")
        sub.wait_for_state(f"{BASE}/cam/detect/state", "on")  # not the "on" of the start
        assert cam.stats().threshold == 2.0 and cam.detect


def test_a_model_that_fails_errors_only_its_cameras(tmp_path: Path, bundle: Path) -> None:
    video = write_scene(tmp_path / "v.avi", 20, range(0))
    data = service_config(
        tmp_path,
        {
            "good": camera(video, loop=True),
            "orphan": camera(video, model="broken"),
        },
        bundle,
    )
    data["models"]["broken"] = {"bundle": str(tmp_path / "no-such-bundle")}
    with running_service(data) as service:
        good, orphan = service.cameras["good"], service.cameras["orphan"]
        wait_until(lambda: orphan.state is CameraState.ERROR, what="the orphan's error")
        wait_until(lambda: good.frames_scored > 10, what="the good camera scoring")
        assert "no-such-bundle" in (orphan.error or "")
        reasons = service.not_ready()
        assert any("broken" in r for r in reasons) and not any("good" in r for r in reasons)
        models = {m.name: m for m in service.model_stats()}
        assert models["broken"].state.value == "error" and models["bright"].state.value == "ready"


def test_storage_cap_holds_under_a_burst_of_events(tmp_path: Path, bundle: Path) -> None:
    # 640x640 frames: each event's evidence is a few hundred kB; a defect every 6 frames
    side = 640
    defects = [i for i in range(120) if i % 6 in (0, 1, 2)]
    video = write_scene(tmp_path / "burst.avi", 120, defects, side=side)
    cam = camera(video, fps=None, alarm={"k": 2, "n": 2, "cooldown_s": 0.0})
    cam["evidence"] = {"pre_s": 0.0, "post_s": 0.0, "clip": False}
    data = service_config(tmp_path, {"burst": cam}, bundle)
    data["storage"]["max_bytes"] = 1024**2
    with running_service(data) as service:
        wait_until(
            lambda: service.cameras["burst"].state is CameraState.ENDED, what="the end", timeout=60
        )
        store = service.store
        events = store.events(limit=1000)
        media_bytes = store.media_bytes()
        on_disk = sum(p.stat().st_size for p in store.media_dir.rglob("*") if p.is_file())
    assert len(events) == 20  # one event per defect stretch
    assert media_bytes <= 1024**2 and on_disk <= 1024**2
    pruned = [e for e in events if e.media_pruned]
    kept = [e for e in events if not e.media_pruned]
    assert pruned and kept
    # the oldest went first: every pruned event started before every kept one
    assert max(e.start for e in pruned) <= min(e.start for e in kept)
    assert all(e.end_reason is not None for e in events)


def test_messages_recorded_while_the_broker_is_down_for_30_s_arrive_in_order(
    tmp_path: Path, bundle: Path, mosquitto_factory, mqtt_collector
) -> None:
    # one defect stretch every 40 frames at 25 fps: an event every 1.6 s, an alarm open at
    # the moment the broker goes away
    video = write_scene(tmp_path / "loop.avi", 40, range(5, 20))
    # a broker that keeps sessions across its restart, and a consumer with a persistent
    # session: what the link sends before the consumer has subscribed again is queued for it
    mosquitto = mosquitto_factory(persistence=True)
    sub = mqtt_collector(mosquitto, [f"{BASE}/events"], client_id="consumer", clean_session=False)
    data = service_config(
        tmp_path, {"cam": camera(video, loop=True)}, bundle, mqtt=mqtt_section(mosquitto)
    )
    with running_service(data) as service:
        cam = service.cameras["cam"]
        sub.wait_for(lambda ms: len(ms) >= 2, what="the first messages")
        wait_until(lambda: cam.recorder.alarm, what="an alarm in progress")
        with mosquitto.down(seconds=30):
            wait_until(lambda: service.store.outbox_depth("mqtt") >= 10, what="a backlog")
        service.cameras["cam"].stop()
        service.cameras["cam"].join()
        wait_until(lambda: service.store.outbox_depth("mqtt") == 0, what="the backlog sent")
        events = service.store.events(limit=1000)
    keys = first_occurrences([message_key(m.payload) for m in sub.on(f"{BASE}/events")])
    by_event: dict[str, list[int]] = {}
    for event_id, seq in keys:
        by_event.setdefault(event_id, []).append(seq)
    # every event of the store, with all its messages, each event's in order
    assert set(by_event) == {e.id for e in events}
    for seqs in by_event.values():
        assert seqs == list(range(len(seqs)))
    last = {json.loads(m.payload)["id"]: json.loads(m.payload) for m in sub.on(f"{BASE}/events")}
    assert all(message["type"] == "end" for message in last.values())
    assert len(events) >= 15  # 30 s at one event per 1.6 s


def test_a_camera_killed_and_restarted_leaves_the_others_unaffected(
    tmp_path: Path, bundle: Path
) -> None:
    from conftest import free_port
    from mjpeg_camera import MjpegCamera

    live = MjpegCamera(free_port())
    live.start()
    video = write_scene(tmp_path / "v.avi", 30, range(0))
    data = service_config(
        tmp_path,
        {
            "live": camera(f"http://127.0.0.1:{live.port}/stream.mjpg", fps=None),
            "steady": camera(video, loop=True),
        },
        bundle,
    )
    try:
        with running_service(data) as service:
            live_cam, steady = service.cameras["live"], service.cameras["steady"]
            wait_until(lambda: live_cam.frames_scored > 10, what="the live camera scoring")
            live.stop()
            wait_until(lambda: live_cam.state is CameraState.OFFLINE, what="offline", timeout=30)
            during = steady.frames_scored
            wait_until(lambda: steady.frames_scored > during + 25, what="the other camera")
            assert steady.state is CameraState.ONLINE
            live.start()
            scored = live_cam.frames_scored
            wait_until(
                lambda: live_cam.state is CameraState.ONLINE and live_cam.frames_scored > scored,
                what="the live camera back",
                timeout=60,
            )
            assert live_cam.reconnects >= 1
    finally:
        live.stop()


def test_frames_are_scored_equal_to_scoring_alone(tmp_path: Path, bundle: Path) -> None:
    """The jsonl log of a camera in the service holds the scores `adedge stream` gives."""
    from adedge.runtime.detector import Detector

    video = write_scene(tmp_path / "v.avi", 12, range(4, 8))
    log = tmp_path / "cam.jsonl"
    data = service_config(tmp_path, {"cam": camera(video, fps=None, jsonl=str(log))}, bundle)
    with running_service(data) as service:
        wait_until(lambda: service.cameras["cam"].state is CameraState.ENDED, what="the end")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    scores = [r["score"] for r in records if r["type"] == "frame"]
    want = [r.score for r in Detector(bundle).score_frames(read_video(video))]
    np.testing.assert_allclose(scores, want, atol=1e-6)


def test_a_sigterm_while_the_cameras_start_still_stops_the_service(
    tmp_path: Path, bundle: Path, monkeypatch
) -> None:
    """Before: a SIGTERM that landed in ``Thread.start`` (the CLI raises it there as
    Terminated) left a camera thread join refused ("cannot join thread before it is
    started"), and ``adedge serve`` ended in a traceback with exit 1, not 143 (a CI
    failure of test_kill_9_during_an_alarm_loses_nothing)."""
    import threading

    from adedge.errors import Terminated
    from adedge.runtime.serve.config import parse_config
    from adedge.runtime.serve.service import Service

    video = write_scene(tmp_path / "v.avi", 10, range(0))
    data = service_config(tmp_path, {"cam": camera(video, loop=True)}, bundle)
    service = Service(parse_config(data), lambda _: None)
    started = threading.Thread.start

    def interrupted(thread: threading.Thread) -> None:
        if thread.name.startswith("camera-"):
            raise Terminated()  # as if SIGTERM arrived before the thread reported in
        started(thread)

    monkeypatch.setattr(threading.Thread, "start", interrupted)
    with pytest.raises(Terminated):
        service.start()
    monkeypatch.setattr(threading.Thread, "start", started)
    service.stop()  # joins nothing it cannot, and returns
    assert not service.cameras["cam"].running
