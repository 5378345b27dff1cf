"""``/api/events`` against a real service: a real uvicorn on a free port of 127.0.0.1, asked
with httpx, over the events that two cameras recorded from the scenes' videos (a dim
surface, a bright defect on known frames: every defect stretch is exactly one event).

What the console and a retraining rely on: the filters and pages, the evidence with its
content types (the clip seekable with Range), the label stored and filtered on, deleting an
event and its files, and the CSV and zip exports. (A label never reaches MQTT or webhooks:
the store keeps it out of every queued message, see test_store_review.)"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from conftest import WAIT_S, wait_until
from serve_scenes import DEFECT_CENTRE, SIDE, camera, running_service, service_config, write_scene

from adedge.runtime.serve.event_export import CSV_COLUMNS
from adedge.runtime.serve.event_types import (
    EndReason,
    Event,
    MediaKind,
    MessageType,
    ModelRef,
    ThresholdSource,
)
from adedge.runtime.serve.stats import CameraState

pytestmark = pytest.mark.runtime

API = {"enabled": True, "port": 0}
STRETCHES = {"line1": [range(10, 20), range(40, 50), range(70, 80)], "line2": [range(20, 30)]}
FRAMES = {"line1": 95, "line2": 50}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, bundle: Path) -> Iterator[Any]:
    """A service whose two cameras played their videos to the end: 3 events on line1, 1 on
    line2, all ended with their evidence. Tests share it: the one that deletes is last."""
    tmp = tmp_path_factory.mktemp("events-api")
    cameras = {}
    for name, stretches in STRETCHES.items():
        defects = {index for stretch in stretches for index in stretch}
        video = write_scene(tmp / f"{name}.avi", FRAMES[name], defects)  # type: ignore[arg-type]
        cameras[name] = camera(video)
    with running_service(service_config(tmp, cameras, bundle, api=API)) as service:
        wait_until(
            lambda: all(c.state is CameraState.ENDED for c in service.cameras.values()),
            what="both videos played to the end",
        )
        wait_until(lambda: not service.store.events(in_progress=True), what="every event ended")
        with httpx.Client(base_url=f"http://127.0.0.1:{service.api.port}", timeout=WAIT_S) as http:
            service.http = http
            yield service


def open_event(camera_name: str, start: float) -> Event:
    """An event still open, recorded into the service's store by the test."""
    return Event(
        id=Event.new_id(camera_name, start),
        node="line-test",
        camera=camera_name,
        model=ModelRef("bright", "", "onnxruntime"),
        start=start,
        peak_score=0.9,
        peak_time=start,
        threshold=0.5,
        threshold_source=ThresholdSource.CARD,
    )


def listed(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    answer = http.get("/api/events", params={"limit": 500, **params})
    assert answer.status_code == 200, answer.text
    assert answer.json()["next_cursor"] is None
    return answer.json()["events"]


def one_line_detail(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail, detail
    return detail


def test_every_defect_stretch_is_one_event_listed_newest_first_with_filters_and_pages(recorded):
    http = recorded.http
    events = listed(http)
    assert [e["camera"] for e in events].count("line1") == 3
    assert [e["camera"] for e in events].count("line2") == 1
    starts = [(e["start"], e["id"]) for e in events]
    assert starts == sorted(starts, reverse=True)  # newest first (ISO UTC sorts as time)
    for event in events:
        assert event["end"] is not None  # (source_ended: a slow machine's cooldown at the end)
        assert event["end_reason"] in (EndReason.NORMAL.value, EndReason.SOURCE_ENDED.value)
        assert event["frames"] >= 8 and event["peak_score"] > 0.9  # one stretch of 10 frames
        assert event["label"] is None and event["labelled_at"] is None
        base = f"/api/events/{event['id']}"
        assert event["urls"] == {
            "snapshot": f"{base}/snapshot.jpg",
            "frame": f"{base}/frame.jpg",
            "heatmap": f"{base}/heatmap.png",
            "clip": f"{base}/clip.mp4",
            "trace": f"{base}/trace.json",
        }
    line1 = [e for e in events if e["camera"] == "line1"]
    assert [e["id"] for e in listed(http, camera="line1")] == [e["id"] for e in line1]
    assert listed(http, camera="nosuch") == [] and listed(http, in_progress="true") == []
    assert len(listed(http, in_progress="false", min_score=0.9, label="none")) == 4
    assert listed(http, min_score=1.01) == []  # the brightest pixel scores at most 1

    # time windows: ISO (Z or an offset, even with its + unencoded) or Unix seconds
    oldest_line1 = recorded.store.get(line1[-1]["id"])
    middle = line1[1]["start"]
    assert [e["id"] for e in listed(http, camera="line1", after=middle)] == [
        e["id"] for e in line1[:2]
    ]
    assert [e["id"] for e in listed(http, camera="line1", before=middle)] == [line1[2]["id"]]
    zulu = middle.replace("+00:00", "Z")
    assert len(listed(http, camera="line1", after=zulu)) == 2
    unencoded = http.get(f"/api/events?camera=line1&after={middle}")  # + arrives as a space
    assert len(unencoded.json()["events"]) == 2
    unix = listed(http, camera="line1", before=repr(oldest_line1.start + 1e-3))
    assert [e["id"] for e in unix] == [line1[2]["id"]]

    # pages of 1 follow the cursor to the same list
    paged, cursor = [], None
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = http.get("/api/events", params=params).json()
        paged += [e["id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == [e["id"] for e in events]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"after": "yesterday"}, "after: 'yesterday' is not a time (use ISO-8601 like"),
        ({"before": "2026-13-01"}, "before: '2026-13-01' is not a time (use ISO-8601 like"),
        ({"label": "maybe"}, "label: 'maybe' is not one of true_anomaly, false_positive, unsure"),
        (
            {"cursor": "bm90IGEgY3Vyc29y"},
            "cursor: not one this API gave (pass a page's next_cursor",
        ),
    ],
)
def test_a_bad_filter_is_422_with_one_line_naming_it(recorded, params, expected):
    detail = one_line_detail(recorded.http.get("/api/events", params=params), 422)
    assert detail.startswith(expected), detail
    if "after" in params or "before" in params:
        assert "Unix seconds" in detail
    assert recorded.http.get("/api/events", params={"limit": 0}).status_code == 422
    assert recorded.http.get("/api/events", params={"limit": 501}).status_code == 422


def test_the_evidence_is_served_with_its_content_type_and_the_clip_seeks(recorded):
    http = recorded.http
    event = listed(http, camera="line2")[0]
    answer = http.get(event["urls"]["snapshot"])
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    snapshot = cv2.imdecode(np.frombuffer(answer.content, np.uint8), cv2.IMREAD_COLOR)
    assert snapshot.shape == (SIDE, SIDE, 3)
    frame = http.get(event["urls"]["frame"])
    assert frame.headers["content-type"] == "image/jpeg"
    raw = cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR)
    assert raw[DEFECT_CENTRE[1], DEFECT_CENTRE[0]].min() > 200  # the defect, as filmed
    heatmap = http.get(event["urls"]["heatmap"])
    assert heatmap.headers["content-type"] == "image/png" and heatmap.content[:4] == b"\x89PNG"

    clip_url = event["urls"]["clip"]
    whole = http.get(clip_url)
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    part = http.get(clip_url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    assert part.content == whole.content[100:200]

    assert one_line_detail(http.get("/api/events/no-such-id"), 404).startswith(
        "no event no-such-id."
    )
    assert http.get("/api/events/no-such-id/snapshot.jpg").status_code == 404

    # the trace the recorder stored when the event ended (pre-roll scores included)
    trace = http.get(event["urls"]["trace"])
    assert trace.status_code == 200, trace.text
    history = trace.json()
    assert history["camera"] == "line2" and history["threshold"] == 0.5
    times = [p["t"] for p in history["points"]]
    assert times == sorted(times) and len(times) >= 10
    stored = recorded.store.get(event["id"])
    assert max(p["score"] for p in history["points"]) == pytest.approx(stored.peak_score)
    assert times[0] <= stored.start and stored.peak_time in times


def test_an_open_event_without_a_stored_trace_gets_the_cameras_scores_since_its_start(recorded):
    http, store = recorded.http, recorded.store
    first = store.get(listed(http, camera="line1")[-1]["id"])
    still_open = open_event("line1", first.start)
    store.record(still_open, MessageType.NEW)
    try:
        trace = http.get(f"/api/events/{still_open.id}/trace.json").json()
        scores = recorded.score_history("line1").points
        expected = [p.model_dump() for p in scores if p.t >= first.start]
        assert len(expected) > 30 and trace["points"] == expected
        assert trace["camera"] == "line1" and trace["threshold"] == 0.5
        # an ended event with no trace stored, long before anything the camera kept
        gone = open_event("line1", 1_000_000_000.0)
        gone.end, gone.end_reason = gone.start + 1, EndReason.NORMAL
        store.record(gone, MessageType.END)
        empty = http.get(f"/api/events/{gone.id}/trace.json").json()
        assert empty == {"camera": "line1", "threshold": 0.5, "points": []}
    finally:
        still_open.end, still_open.end_reason = first.end, EndReason.NORMAL
        store.record(still_open, MessageType.END)
        for event in store.events(camera="line1", before=first.start + 1e-3):
            if event.id != first.id:
                store.delete(event.id)  # the shared service keeps only what the videos made


def test_a_label_round_trips_and_filters_the_list(recorded):
    http = recorded.http
    first, second, third = listed(http, camera="line1")
    answer = http.post(f"/api/events/{second['id']}/label", json={"label": "false_positive"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == "false_positive" and answer.json()["labelled_at"]
    assert answer.json()["urls"] == second["urls"]
    assert http.get(f"/api/events/{second['id']}").json()["label"] == "false_positive"
    assert [e["id"] for e in listed(http, label="false_positive")] == [second["id"]]
    assert second["id"] not in {e["id"] for e in listed(http, label="none")}
    assert recorded.store.get_stored(second["id"]).label.value == "false_positive"

    cleared = http.post(f"/api/events/{second['id']}/label", json={"label": None})
    assert cleared.json()["label"] is None and cleared.json()["labelled_at"] is None
    assert listed(http, label="false_positive") == []
    assert http.post(f"/api/events/{first['id']}/label", json={"label": "bad"}).status_code == 422
    assert http.post(f"/api/events/{first['id']}/label", json={}).status_code == 422
    missing = http.post("/api/events/nope/label", json={"label": "unsure"})
    assert one_line_detail(missing, 404).startswith("no event nope.")


def test_export_as_csv_and_as_a_zip_sorted_by_label(recorded):
    http = recorded.http
    newest, middle, oldest = listed(http, camera="line1")
    http.post(f"/api/events/{newest['id']}/label", json={"label": "true_anomaly"})
    http.post(f"/api/events/{middle['id']}/label", json={"label": "false_positive"})
    everything = listed(http)

    answer = http.get("/api/events/export", params={"format": "csv"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-disposition"].startswith('attachment; filename="adedge-')
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row["id"] for row in rows] == [e["id"] for e in everything]
    by_id = {row["id"]: row for row in rows}
    assert by_id[newest["id"]]["label"] == "true_anomaly"
    assert by_id[middle["id"]]["label"] == "false_positive"
    assert by_id[oldest["id"]]["label"] == ""
    assert by_id[oldest["id"]]["start"] == oldest["start"]
    assert float(by_id[oldest["id"]]["peak_score"]) == oldest["peak_score"]
    assert by_id[oldest["id"]]["media"].startswith("snapshot;frame;heatmap;clip")
    assert set(by_id[oldest["id"]]["media"].split(";")) == set(oldest["media"])
    box = oldest["box"]
    assert by_id[oldest["id"]]["box"] == f"{box['x']} {box['y']} {box['width']} {box['height']}"
    only_fp = http.get("/api/events/export", params={"format": "csv", "label": "false_positive"})
    assert [row["id"] for row in csv.DictReader(io.StringIO(only_fp.text))] == [middle["id"]]

    answer = http.get("/api/events/export", params={"format": "zip", "camera": "line1"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert sorted(archive.namelist()) == sorted(
        [
            "events.csv",
            f"true_anomaly/{newest['id']}.jpg",
            f"true_anomaly/frames/{newest['id']}.jpg",
            f"false_positive/{middle['id']}.jpg",
            f"false_positive/frames/{middle['id']}.jpg",
            f"unlabelled/{oldest['id']}.jpg",
            f"unlabelled/frames/{oldest['id']}.jpg",
        ]
    )
    inside = list(csv.DictReader(io.StringIO(archive.read("events.csv").decode())))
    assert [row["id"] for row in inside] == [e["id"] for e in (newest, middle, oldest)]
    # the false positive's raw frame is the normal image a retraining wants: as filmed
    raw = archive.read(f"false_positive/frames/{middle['id']}.jpg")
    assert raw == http.get(middle["urls"]["frame"]).content
    snapshot = archive.read(f"false_positive/{middle['id']}.jpg")
    assert snapshot == http.get(middle["urls"]["snapshot"]).content and snapshot != raw
    assert http.get("/api/events/export", params={"format": "pdf"}).status_code == 422


def test_delete_removes_the_event_and_its_files_but_not_one_in_progress(recorded):
    http, store = recorded.http, recorded.store
    (event,) = listed(http, camera="line2")
    files = [store.media_path(event["id"], kind) for kind in MediaKind]
    files = [file for file in files if file is not None]
    assert len(files) >= 4
    size = sum(file.stat().st_size for file in files)
    before = store.media_bytes()

    still_open = open_event("line2", 1_790_000_000.0)
    store.record(still_open, MessageType.NEW)
    refused = http.delete(f"/api/events/{still_open.id}")
    assert one_line_detail(refused, 409) == (
        f"event {still_open.id} is still in progress. delete it once it has ended."
    )

    answer = http.delete(f"/api/events/{event['id']}")
    assert answer.status_code == 204 and answer.content == b""
    assert not any(file.exists() for file in files)
    assert store.media_bytes() == before - size
    assert http.get(f"/api/events/{event['id']}").status_code == 404
    assert http.get(event["urls"]["snapshot"]).status_code == 404
    assert one_line_detail(http.delete(f"/api/events/{event['id']}"), 404).startswith("no event")
    assert [e["id"] for e in listed(http, camera="line2")] == [still_open.id]
