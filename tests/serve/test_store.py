"""The event store on a real SQLite file: events and their messages round-trip, the outbox
keeps order per channel, a kill -9 loses no committed event, the media cap holds under a
burst (oldest evidence first, rows kept), paths never leave the media folder, and a broken
file is one line that says what to do."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from adedge.errors import AdedgeError
from adedge.runtime.serve.event_types import (
    Box,
    EndReason,
    Event,
    MediaKind,
    MessageType,
    ModelRef,
    ThresholdSource,
)
from adedge.runtime.serve.store import EventStore

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed

CHANNELS = ("mqtt", "webhook:ops")
MEGABYTE = 1024**2


def make_event(camera: str = "line3", start: float = 1_790_000_000.123456, **fields) -> Event:
    event = Event(
        id=Event.new_id(camera, start),
        node="node-a",
        camera=camera,
        model=ModelRef("patchcore", "ab" * 32, "onnxruntime"),
        start=start,
        peak_score=0.91,
        peak_time=start + 0.25,
        threshold=0.5,
        threshold_source=ThresholdSource.CARD,
    )
    for name, value in fields.items():
        setattr(event, name, value)
    return event


def open_store(root: Path, **options) -> EventStore:
    options.setdefault("max_bytes", 100 * MEGABYTE)
    return EventStore(root, CHANNELS, **options)


def write_media(store: EventStore, event: Event, kind: MediaKind, size: int) -> Path:
    path = store.media_file(event.camera, event.id, kind, ".jpg")
    path.write_bytes(os.urandom(size))
    return path


def raw_sql(database: Path, statement: str, *args: object) -> list[tuple]:
    """One statement on the file, past the store (as another program would)."""
    with contextlib.closing(sqlite3.connect(database)) as raw, raw:
        return raw.execute(statement, args).fetchall()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# --- events and messages ----------------------------------------------------------------------


def test_an_event_round_trips_with_every_field_and_survives_reopening(tmp_path):
    store = open_store(tmp_path)
    event = make_event(
        end=1_790_000_009.987654,
        end_reason=EndReason.NORMAL,
        frames=42,
        box=Box(10, 20, 30, 40),
        labels={"site": "plant-2", "line": "3"},
        threshold_source=ThresholdSource.RUNTIME,
        peak_score=1.75,
    )
    message = store.record(event, MessageType.NEW)
    snapshot = write_media(store, event, MediaKind.SNAPSHOT, 1234)
    store.add_media(event.id, MediaKind.SNAPSHOT, snapshot)
    event.media = {MediaKind.SNAPSHOT: snapshot.relative_to(store.media_dir).as_posix()}

    assert message["type"] == "new" and message["seq"] == 0 and message["id"] == event.id
    assert store.get(event.id) == event  # exact times, not the JSON's milliseconds
    assert store.get("no-such-event") is None
    assert store.media_path(event.id, MediaKind.SNAPSHOT) == snapshot.resolve()
    assert store.media_path(event.id, MediaKind.CLIP) is None
    assert store.media_bytes() == 1234
    store.close()

    with open_store(tmp_path) as reopened:
        assert reopened.get(event.id) == event
        assert reopened.media_bytes() == 1234 and reopened.count() == 1
        broken_score = make_event(start=2000.0, peak_score=math.nan)  # JSON has no NaN
        assert reopened.record(broken_score, MessageType.NEW)["peak_score"] is None
        assert math.isnan(reopened.get(broken_score.id).peak_score)


def test_seq_counts_per_event_and_each_channel_gets_every_message_in_order(tmp_path):
    store = open_store(tmp_path)
    first, second = make_event(start=1000.0), make_event(start=1001.0)
    store.record(first, MessageType.NEW)
    store.record(second, MessageType.NEW)
    first.peak_score = 2.5
    store.record(first, MessageType.UPDATE)
    store.enqueue("mqtt", "line3/state", "alarm")
    first.end, first.end_reason = 1010.0, EndReason.NORMAL
    store.record(first, MessageType.END)
    second.end, second.end_reason = 1011.0, EndReason.SHUTDOWN
    store.record(second, MessageType.END, topic="other")

    sent = [(first.id, "new", 0), (second.id, "new", 0), (first.id, "update", 1)]
    sent += [(first.id, "end", 2), (second.id, "end", 1)]
    mqtt = store.pending("mqtt")
    assert [item.topic for item in mqtt] == ["events"] * 3 + ["line3/state", "events", "other"]
    assert mqtt[3].payload == "alarm"
    event_items = [item for item in mqtt if item.topic != "line3/state"]
    decoded = [json.loads(item.payload) for item in event_items]
    assert [(m["id"], m["type"], m["seq"]) for m in decoded] == sent
    assert decoded[2]["peak_score"] == 2.5 and decoded[3]["end_reason"] == "normal"

    webhook = store.pending("webhook:ops")
    assert [item.payload for item in webhook] == [item.payload for item in event_items]
    assert {item.topic for item in webhook} == {""} and {i.channel for i in webhook} == {
        "webhook:ops"
    }
    for items in (mqtt, webhook):
        assert [item.id for item in items] == sorted({item.id for item in items})
    assert store.outbox_depth() == 11 and store.outbox_depth("mqtt") == 6
    assert store.count() == 2  # the id is the key: two events, however many messages
    with pytest.raises(ValueError, match="unknown channel"):
        store.enqueue("webhook:gone", "", "{}")
    store.close()


def test_threads_share_one_store_without_losing_or_mixing_messages(tmp_path):
    store = open_store(tmp_path)
    per_camera = 25

    def camera_loop(camera: str) -> None:
        for index in range(per_camera):
            event = make_event(camera=camera, start=1000.0 + index)
            store.record(event, MessageType.NEW)
            event.end, event.end_reason = event.start + 1, EndReason.NORMAL
            store.record(event, MessageType.END)

    def sender() -> None:  # a channel's sender acks while the cameras record
        for _ in range(200):
            for item in store.pending("webhook:ops", limit=10):
                store.ack("webhook:ops", item.id)

    threads = [threading.Thread(target=camera_loop, args=(f"cam{n}",)) for n in range(4)]
    threads.append(threading.Thread(target=sender))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert store.count() == 4 * per_camera and store.outbox_depth("mqtt") == 8 * per_camera
    seen: dict[str, list[tuple[str, int]]] = {}
    for item in store.pending("mqtt", limit=1000):
        message = json.loads(item.payload)
        seen.setdefault(message["id"], []).append((message["type"], message["seq"]))
    assert list(seen.values()) == [[("new", 0), ("end", 1)]] * (4 * per_camera)
    store.close()


def test_ack_removes_and_after_pages_through_the_outbox(tmp_path):
    store = open_store(tmp_path)
    for index in range(10):
        store.record(make_event(start=1000.0 + index), MessageType.NEW)

    page = store.pending("mqtt", limit=4)
    next_page = store.pending("mqtt", limit=4, after=page[-1].id)
    last_page = store.pending("mqtt", limit=4, after=next_page[-1].id)
    assert [len(page), len(next_page), len(last_page)] == [4, 4, 2]
    every = page + next_page + last_page
    assert [json.loads(i.payload)["start"] for i in every] == sorted(
        json.loads(i.payload)["start"] for i in every
    )
    for item in page:
        store.ack("mqtt", item.id)
    assert store.pending("mqtt", limit=100) == next_page + last_page
    assert store.outbox_depth("mqtt") == 6 and store.outbox_depth("webhook:ops") == 10
    store.ack("webhook:ops", page[0].id)  # an mqtt id: the webhook's own rows stay
    assert store.outbox_depth("webhook:ops") == 10

    for item in next_page + last_page:
        store.ack("mqtt", item.id)
    assert store.outbox_depth("mqtt") == 0
    store.close()
    with open_store(tmp_path) as reopened:  # ids are never reused, even once all were acked
        assert reopened.enqueue("mqtt", "x", "{}") > last_page[-1].id
        assert reopened.storage_stats().outbox == {"mqtt": 1, "webhook:ops": 10}


def test_close_interrupted_ends_open_events_and_queues_their_end(tmp_path):
    store = open_store(tmp_path)
    still_open = make_event(start=1000.0)
    ended = make_event(start=1001.0, end=1005.0, end_reason=EndReason.NORMAL)
    store.record(still_open, MessageType.NEW)
    store.record(still_open, MessageType.UPDATE)
    store.record(ended, MessageType.NEW)
    store.close()

    store = open_store(tmp_path)
    assert [e.id for e in store.events(in_progress=True)] == [still_open.id]
    closed = store.close_interrupted(now=2000.0)
    assert [e.id for e in closed] == [still_open.id]
    stored = store.get(still_open.id)
    assert stored.end == 2000.0 and stored.end_reason is EndReason.INTERRUPTED
    assert store.get(ended.id).end_reason is EndReason.NORMAL
    last = json.loads(store.pending("mqtt")[-1].payload)
    assert (last["id"], last["type"], last["seq"]) == (still_open.id, "end", 2)
    assert last["end_reason"] == "interrupted"
    assert store.close_interrupted(now=3000.0) == [] and store.events(in_progress=True) == []
    assert [e.id for e in store.events()] == [ended.id, still_open.id]  # newest first
    assert [e.id for e in store.events(before=1001.0)] == [still_open.id]
    assert store.events(camera="elsewhere") == []
    store.close()


# --- kill -9 ------------------------------------------------------------------------------------

# Records events in a loop and prints each message once it is committed: what a service
# would publish next. Every other event is ended; the rest stay open.
KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from adedge.runtime.serve.event_types import (
        EndReason, Event, MessageType, ModelRef, ThresholdSource)
    from adedge.runtime.serve.store import EventStore

    store = EventStore(Path(sys.argv[1]), ["mqtt", "webhook:ops"], max_bytes=10**9)
    index = 0
    while True:
        start = time.time()
        event = Event(
            id=Event.new_id("cam", start), node="n", camera="cam",
            model=ModelRef("m", "0" * 64, "onnxruntime"), start=start, peak_score=1.0,
            peak_time=start, threshold=0.5, threshold_source=ThresholdSource.CARD)
        store.record(event, MessageType.NEW)
        print("new", event.id, flush=True)
        if index % 2 == 0:
            event.end, event.end_reason = time.time(), EndReason.NORMAL
            store.record(event, MessageType.END)
            print("end", event.id, flush=True)
        index += 1
    """
)
KILL_AFTER_EVENTS = 40


def test_the_store_is_whole_after_a_kill_9_mid_stream(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        while sum(line.startswith("new") for line in lines) < KILL_AFTER_EVENTS:
            line = process.stdout.readline()
            assert line, process.stderr.read()  # the writer died on its own
            lines.append(line)
        process.kill()  # SIGKILL, mid-stream: no handler, no finally, no close
    finally:
        process.kill()
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    lines += rest.splitlines()  # printed before the kill landed: committed too
    printed = [line.split() for line in lines if line.strip()]

    assert raw_sql(tmp_path / "events.db", "PRAGMA integrity_check") == [("ok",)]
    store = open_store(tmp_path)
    ended = {event_id for kind, event_id in printed if kind == "end"}
    for kind, event_id in printed:
        assert store.get(event_id) is not None, f"{kind} of {event_id} was lost"
    for event_id in ended:
        assert store.get(event_id).end_reason is EndReason.NORMAL
    queued = {(m["id"], m["type"]) for m in map(json.loads, payloads(store, "mqtt"))}
    assert {(event_id, kind) for kind, event_id in printed} <= queued
    assert payloads(store, "mqtt") == payloads(store, "webhook:ops")

    closed = store.close_interrupted(now=time.time())
    assert closed and not {event.id for event in closed} & ended
    assert store.events(in_progress=True, limit=1000) == []
    for event in closed:
        assert store.get(event.id).end_reason is EndReason.INTERRUPTED
        assert (event.id, "end") in {
            (m["id"], m["type"]) for m in map(json.loads, payloads(store, "webhook:ops"))
        }
    store.close()


def payloads(store: EventStore, channel: str) -> list[str]:
    return [item.payload for item in store.pending(channel, limit=100_000)]


# --- the media cap ----------------------------------------------------------------------------


def test_the_cap_holds_under_a_burst_and_prunes_the_oldest_evidence_first(tmp_path):
    store = open_store(tmp_path, max_bytes=MEGABYTE)
    events = [make_event(start=1_790_000_000.0 + index) for index in range(60)]
    files: dict[str, list[Path]] = {}
    pruned: list[str] = []
    for event in events:
        store.record(event, MessageType.NEW)
        files[event.id] = [
            write_media(store, event, MediaKind.SNAPSHOT, 40_000),
            write_media(store, event, MediaKind.FRAME, 10_000),
        ]
        store.add_media(event.id, MediaKind.SNAPSHOT, files[event.id][0])
        store.add_media(event.id, MediaKind.FRAME, files[event.id][1])
        event.end, event.end_reason = event.start + 5, EndReason.NORMAL
        store.record(event, MessageType.END)
        pruned += store.enforce_cap()
        assert store.media_bytes() <= MEGABYTE

    on_disk = files_under(store.media_dir)
    assert store.media_bytes() == sum(p.stat().st_size for p in on_disk)
    kept = 20  # 20 events of 50 kB fit in 1 MiB (1 048 576 bytes), 21 do not
    assert pruned == [event.id for event in events[:-kept]]  # oldest first, each once
    assert store.count() == 60
    for event in events[:-kept]:
        stored = store.get(event.id)
        assert stored.media_pruned and stored.media == {}
        assert not any(path.exists() for path in files[event.id])
        assert store.media_path(event.id, MediaKind.SNAPSHOT) is None
    for event in events[-kept:]:
        stored = store.get(event.id)
        assert not stored.media_pruned and set(stored.media) == {
            MediaKind.SNAPSHOT,
            MediaKind.FRAME,
        }
    last_end = json.loads(store.pending("mqtt", limit=1000)[-1].payload)
    assert last_end["type"] == "end" and set(last_end["media"]) == {"snapshot", "frame"}
    store.close()
    with open_store(tmp_path, max_bytes=MEGABYTE) as reopened:  # the total is rebuilt
        assert reopened.media_bytes() == sum(p.stat().st_size for p in on_disk)
        assert reopened.opened.repaired_media is False


def test_min_free_bytes_prunes_even_under_the_byte_cap(tmp_path):
    store = open_store(tmp_path)
    events = [make_event(start=1000.0 + index) for index in range(3)]
    for event in events:
        store.record(event, MessageType.NEW)
        store.add_media(event.id, MediaKind.CLIP, write_media(store, event, MediaKind.CLIP, 1000))
    assert store.enforce_cap() == []  # 3 kB under a 100 MB cap, no free-space floor
    store.close()

    impossible = store.free_bytes() + 1024**5  # a petabyte more than the disk has free
    with open_store(tmp_path, min_free_bytes=impossible) as starved:
        assert starved.enforce_cap() == [event.id for event in events]  # and then stops
        assert starved.media_bytes() == 0 and files_under(starved.media_dir) == []
        assert all(starved.get(event.id).media_pruned for event in events)
        assert starved.enforce_cap() == []


def test_a_restart_re_attaches_unadded_evidence_and_removes_leftovers(tmp_path):
    store = open_store(tmp_path)
    event, pruned = make_event(start=1000.0), make_event(start=999.0)
    store.record(event, MessageType.NEW)
    store.record(pruned, MessageType.NEW)
    snapshot = write_media(store, event, MediaKind.SNAPSHOT, 700)
    store.add_media(event.id, MediaKind.SNAPSHOT, snapshot)
    store.add_media(pruned.id, MediaKind.FRAME, write_media(store, pruned, MediaKind.FRAME, 1))
    store.max_bytes = 700
    assert store.enforce_cap() == [pruned.id]
    store.close()
    # as a process killed between writing a file and add_media leaves them:
    clip = write_media(store, event, MediaKind.CLIP, 300)
    late = write_media(store, pruned, MediaKind.HEATMAP, 50)  # its event's media were pruned
    stray = store.media_dir / "line3" / "notes.txt"
    stray.write_text("nobody points here")
    partial = snapshot.parent / f".{snapshot.name}.123.abc.partial.jpg"
    partial.write_bytes(b"half a jpeg")
    snapshot.unlink()  # and one an event names is gone

    with open_store(tmp_path) as reopened:
        report = reopened.opened
        assert (report.media_adopted, report.media_removed, report.media_missing) == (1, 3, 1)
        stored = reopened.get(event.id)
        assert set(stored.media) == {MediaKind.CLIP} and stored.media_pruned
        assert reopened.media_path(event.id, MediaKind.CLIP) == clip.resolve()
        assert reopened.media_bytes() == 300
        assert not late.exists() and not stray.exists() and not partial.exists()


# --- paths and broken files -------------------------------------------------------------------


def test_media_paths_outside_the_media_folder_are_refused(tmp_path):
    store = open_store(tmp_path / "store")
    event = make_event()
    store.record(event, MessageType.NEW)
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"x" * 10)
    link = store.media_dir / "link.jpg"
    link.symlink_to(outside)
    for path in (outside, store.media_dir / ".." / "events.db", link, Path("../events.db")):
        with pytest.raises(ValueError, match="not a file inside the media folder"):
            store.add_media(event.id, MediaKind.SNAPSHOT, path)
    event.media = {MediaKind.FRAME: "../../outside.jpg"}
    with pytest.raises(ValueError, match="not a file inside the media folder"):
        store.record(event, MessageType.UPDATE)
    for camera, event_id, suffix in (
        ("../up", event.id, ".jpg"),
        ("line3", "a/b", ".jpg"),
        ("line3", "..", ".jpg"),
        ("line3", event.id, "/../../x"),
    ):
        with pytest.raises(ValueError):
            store.media_file(camera, event_id, MediaKind.CLIP, suffix)
    assert store.media_bytes() == 0 and store.get(event.id).media == {}

    database = store.root / "events.db"  # a stored name that would leave the media folder
    data = json.loads(raw_sql(database, "SELECT data FROM events")[0][0])
    data["media"] = {"snapshot": "../../outside.jpg"}
    raw_sql(database, "UPDATE events SET data = ?", json.dumps(data))
    assert store.media_path(event.id, MediaKind.SNAPSHOT) is None
    store.close()


def one_line_error(root: Path) -> str:
    with pytest.raises(AdedgeError) as caught:
        open_store(root)
    text = caught.value.one_line()
    assert "\n" not in text and "Traceback" not in text
    return text


def test_a_corrupt_foreign_or_newer_store_is_one_line_naming_the_file_and_the_fix(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "events.db").write_bytes(b"this is not an SQLite file at all\n" * 200)
    text = one_line_error(broken)
    assert str(broken / "events.db") in text and "move it away" in text

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    raw_sql(foreign / "events.db", "CREATE TABLE recipes (name TEXT)")
    assert "not an adedge event store" in one_line_error(foreign)

    newer = tmp_path / "newer"
    open_store(newer).close()
    raw_sql(newer / "events.db", "PRAGMA user_version = 99")
    assert "schema 99, newer than this adedge reads" in one_line_error(newer)


def test_a_second_store_on_the_same_folder_is_refused_while_the_first_is_open(tmp_path):
    first = open_store(tmp_path)
    assert "another process uses the event store" in one_line_error(tmp_path)
    first.close()
    open_store(tmp_path).close()  # free again once closed
    assert raw_sql(tmp_path / "events.db", "PRAGMA journal_mode") == [("wal",)]
