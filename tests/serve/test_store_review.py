"""The event store's review side on a real SQLite file: a label is kept beside the event
(never overwritten by the camera's later messages, never in a published message), deleting
an ended event removes its row and evidence, a store of schema 1 (issue 18) opens and keeps
its events, and the filters and keyset pages of ``GET /api/events`` return exactly the
events they should."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from adedge.runtime.serve.api_types import EventLabel
from adedge.runtime.serve.event_types import (
    EndReason,
    Event,
    MediaKind,
    MessageType,
    ModelRef,
    ThresholdSource,
)
from adedge.runtime.serve.store import EventInProgress, EventStore
from adedge.runtime.serve.store_queries import UNLABELLED, EventQuery, encode_cursor

pytestmark = pytest.mark.runtime

CHANNELS = ("mqtt", "webhook:ops")
T0 = 1_790_000_000.0


def make_event(camera: str, start: float, score: float = 0.9, ended: bool = True, **fields):
    event = Event(
        id=fields.pop("id", None) or Event.new_id(camera, start),
        node="node-a",
        camera=camera,
        model=ModelRef("patchcore", "ab" * 32, "onnxruntime"),
        start=start,
        peak_score=score,
        peak_time=start + 0.5,
        threshold=0.5,
        threshold_source=ThresholdSource.CARD,
    )
    if ended:
        event.end, event.end_reason = start + 2.0, EndReason.NORMAL
    for name, value in fields.items():
        setattr(event, name, value)
    return event


def open_store(root: Path) -> EventStore:
    return EventStore(root, CHANNELS, max_bytes=64 * 1024**2)


def attach(store: EventStore, event: Event, kind: MediaKind, size: int) -> Path:
    path = store.media_file(event.camera, event.id, kind, ".jpg")
    path.write_bytes(os.urandom(size))
    store.add_media(event.id, kind, path)
    return path


def raw_sql(database: Path, *statements: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(database)) as raw, raw:
        rows: list[tuple] = []
        for statement in statements:
            rows = raw.execute(statement).fetchall()
        return rows


# --- labels ------------------------------------------------------------------------------


def test_a_label_is_kept_beside_the_event_and_never_published_or_overwritten(tmp_path):
    store = open_store(tmp_path)
    event = make_event("line1", T0, ended=False)
    store.record(event, MessageType.NEW)

    labelled = store.set_label(event.id, EventLabel.FALSE_POSITIVE, now=T0 + 60)
    assert labelled is not None and labelled.event.id == event.id
    assert (labelled.label, labelled.labelled_at) == (EventLabel.FALSE_POSITIVE, T0 + 60)

    # the camera goes on: its peak rises, then it ends; each message rewrites the JSON
    event.peak_score = 1.5
    store.record(event, MessageType.UPDATE)
    event.end, event.end_reason = T0 + 3, EndReason.NORMAL
    store.record(event, MessageType.END)
    stored = store.get_stored(event.id)
    assert stored.label is EventLabel.FALSE_POSITIVE and stored.labelled_at == T0 + 60
    assert stored.event == event  # the event itself is the camera's, exactly

    # no message carries it, to any channel (MQTT and webhooks send the outbox as it is)
    payloads = [item.payload for channel in CHANNELS for item in store.pending(channel)]
    assert len(payloads) == 6
    assert all("false_positive" not in text and "labelled_at" not in text for text in payloads)
    assert [json.loads(text)["type"] for text in payloads[:3]] == ["new", "update", "end"]
    assert store.outbox_depth() == 6  # labelling queued nothing
    store.close()

    with open_store(tmp_path) as reopened:
        assert reopened.get_stored(event.id).label is EventLabel.FALSE_POSITIVE
        relabelled = reopened.set_label(event.id, "true_anomaly", now=T0 + 90)
        assert (relabelled.label, relabelled.labelled_at) == (EventLabel.TRUE_ANOMALY, T0 + 90)
        cleared = reopened.set_label(event.id, None)
        assert (cleared.label, cleared.labelled_at) == (None, None)
        assert reopened.set_label("no-such-event", EventLabel.UNSURE) is None
        with pytest.raises(ValueError, match="not one of true_anomaly"):
            reopened.set_label(event.id, "looks_fine")
        assert reopened.get_stored(event.id).label is None  # the refused label left nothing


# --- delete --------------------------------------------------------------------------------


def test_deleting_an_ended_event_removes_its_row_and_evidence_but_not_its_queued_messages(
    tmp_path,
):
    store = open_store(tmp_path)
    kept = make_event("line1", T0)
    gone = make_event("line2", T0 + 10)
    for event in (kept, gone):
        store.record(event, MessageType.END)
    kept_file = attach(store, kept, MediaKind.SNAPSHOT, 1000)
    files = [
        attach(store, gone, MediaKind.SNAPSHOT, 3000),
        attach(store, gone, MediaKind.FRAME, 500),
    ]
    assert store.media_bytes() == 4500
    queued = store.outbox_depth()

    assert store.delete(gone.id) is True
    assert store.get(gone.id) is None and store.count() == 1
    assert not any(file.exists() for file in files)
    assert not (store.media_dir / "line2").exists()  # its empty camera folder went too
    assert kept_file.is_file() and store.media_bytes() == 1000
    assert store.outbox_depth() == queued  # its new/end messages were promised: they stay
    assert store.delete(gone.id) is False  # already gone
    store.close()

    with open_store(tmp_path) as reopened:  # the walk at open agrees with the running total
        assert reopened.media_bytes() == 1000 and reopened.count() == 1
        assert not reopened.opened.repaired_media


def test_an_event_in_progress_cannot_be_deleted(tmp_path):
    store = open_store(tmp_path)
    event = make_event("line1", T0, ended=False)
    store.record(event, MessageType.NEW)
    snapshot = attach(store, event, MediaKind.SNAPSHOT, 800)
    with pytest.raises(EventInProgress) as refused:
        store.delete(event.id)
    assert refused.value.one_line() == (
        f"event {event.id} is still in progress. delete it once it has ended."
    )
    assert store.get(event.id) is not None and snapshot.is_file()
    assert store.media_bytes() == 800
    event.end, event.end_reason = T0 + 5, EndReason.NORMAL
    store.record(event, MessageType.END)
    assert store.delete(event.id) and store.media_bytes() == 0 and not snapshot.exists()
    store.close()


# --- the schema-1 store of issue 18 ----------------------------------------------------------

SCHEMA_1 = [  # issue 18's events.db, exactly as that version created it
    """CREATE TABLE events (
        id TEXT PRIMARY KEY,
        camera TEXT NOT NULL,
        start_time REAL NOT NULL,
        end_time REAL,
        peak_time REAL NOT NULL,
        peak_score REAL,
        data TEXT NOT NULL,
        next_seq INTEGER NOT NULL DEFAULT 0,
        media_files INTEGER NOT NULL DEFAULT 0,
        media_bytes INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX events_camera_start ON events(camera, start_time)",
    "CREATE INDEX events_start ON events(start_time)",
    "CREATE INDEX events_open ON events(start_time) WHERE end_time IS NULL",
    "CREATE INDEX events_with_media ON events(start_time) WHERE media_files > 0",
    """CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        topic TEXT NOT NULL,
        payload TEXT NOT NULL,
        created REAL NOT NULL
    )""",
    "CREATE INDEX outbox_channel ON outbox(channel, id)",
    "PRAGMA user_version = 1",
]


def test_a_schema_1_store_is_upgraded_in_place_and_keeps_its_events_media_and_outbox(tmp_path):
    event = make_event("line1", T0 + 0.123456, score=0.75)
    media = tmp_path / "media" / "line1" / "2026-09-21"
    media.mkdir(parents=True)
    snapshot = media / f"{event.id}-snapshot.jpg"
    snapshot.write_bytes(b"\xff\xd8" + b"x" * 998)
    event.media = {MediaKind.SNAPSHOT: f"line1/2026-09-21/{snapshot.name}"}
    data = json.dumps(event.to_dict()).replace("'", "''")
    raw_sql(
        tmp_path / "events.db",
        *SCHEMA_1,
        "INSERT INTO events (id, camera, start_time, end_time, peak_time, peak_score, data, "
        f"next_seq, media_files, media_bytes) VALUES ('{event.id}', 'line1', {event.start!r}, "
        f"{event.end!r}, {event.peak_time!r}, 0.75, '{data}', 2, 1, 1000)",
        "INSERT INTO outbox (channel, topic, payload, created) "
        f"VALUES ('mqtt', 'events', '{{\"id\": \"{event.id}\"}}', {T0})",
    )

    with open_store(tmp_path) as store:
        stored = store.get_stored(event.id)
        assert stored.event == event and stored.label is None
        assert store.media_bytes() == 1000 and not store.opened.repaired_media
        assert [item.payload for item in store.pending("mqtt")] == [f'{{"id": "{event.id}"}}']
        assert store.set_label(event.id, EventLabel.UNSURE).label is EventLabel.UNSURE
        assert store.record(event, MessageType.END)["seq"] == 2  # its seq goes on
    columns = raw_sql(tmp_path / "events.db", "PRAGMA table_info(events)")
    assert [c[1] for c in columns][-2:] == ["label", "labelled_at"]
    assert raw_sql(tmp_path / "events.db", "PRAGMA user_version") == [(2,)]
    with open_store(tmp_path) as again:  # a second open finds schema 2 and changes nothing
        assert again.get_stored(event.id).label is EventLabel.UNSURE
        page = again.query(EventQuery(label=EventLabel.UNSURE))
        assert [s.event.id for s in page.events] == [event.id]


# --- queries and pages -------------------------------------------------------------------------


@pytest.fixture
def reviewed(tmp_path):
    """Ten events on two cameras, one second apart (index = start order), two of them
    sharing a start; scores 0.1 * index + 0.5; the last one open; some labelled."""
    store = open_store(tmp_path)
    events = []
    for index in range(10):
        start = T0 + (index if index != 5 else 4)  # 4 and 5 start together
        camera = "line1" if index % 2 == 0 else "line2"
        event_id = f"{int(start * 1000):013d}-{camera}-{index:06x}"  # ties broken by id
        event = make_event(camera, start, 0.5 + 0.1 * index, ended=index != 9, id=event_id)
        store.record(event, MessageType.NEW if index == 9 else MessageType.END)
        events.append(event)
    labels = {1: EventLabel.FALSE_POSITIVE, 4: EventLabel.FALSE_POSITIVE, 6: EventLabel.UNSURE}
    for index, label in labels.items():
        store.set_label(events[index].id, label)
    yield store, [event.id for event in events]
    store.close()


def ids(store: EventStore, **filters) -> list[str]:
    return [s.event.id for s in store.query(EventQuery(limit=500, **filters)).events]


def test_every_filter_selects_exactly_its_events_newest_first(reviewed):
    store, by_index = reviewed

    def picked(*indices: int) -> list[str]:
        return [by_index[i] for i in indices]

    assert ids(store) == picked(9, 8, 7, 6, 5, 4, 3, 2, 1, 0)  # 4, 5 tie: the larger id first
    assert ids(store, camera="line2") == picked(9, 7, 5, 3, 1)
    assert ids(store, camera="nosuch") == []
    assert ids(store, after=T0 + 4) == picked(9, 8, 7, 6, 5, 4)  # after <= start
    assert ids(store, before=T0 + 4) == picked(3, 2, 1, 0)  # start < before
    assert ids(store, after=T0 + 2, before=T0 + 6) == picked(5, 4, 3, 2)
    assert ids(store, min_score=1.0) == picked(9, 8, 7, 6, 5)  # inclusive: 0.5 + 0.5
    assert ids(store, min_score=1.05) == picked(9, 8, 7, 6)
    assert ids(store, in_progress=True) == picked(9)
    assert ids(store, in_progress=False) == picked(8, 7, 6, 5, 4, 3, 2, 1, 0)
    assert ids(store, label=EventLabel.FALSE_POSITIVE) == picked(4, 1)
    assert ids(store, label="unsure") == picked(6)
    assert ids(store, label=EventLabel.TRUE_ANOMALY) == []
    assert ids(store, label=UNLABELLED) == picked(9, 8, 7, 5, 3, 2, 0)
    assert ids(store, camera="line1", label=UNLABELLED, in_progress=False) == picked(8, 2, 0)
    by_id = {s.event.id: s for s in store.query(EventQuery(limit=500)).events}
    assert by_id[by_index[4]].label is EventLabel.FALSE_POSITIVE
    assert by_id[by_index[4]].labelled_at is not None and by_id[by_index[0]].label is None
    assert store.events(camera="line1", limit=2) == [store.get(by_index[8]), store.get(by_index[6])]


def test_pages_follow_the_cursor_without_repeat_or_gap_even_as_new_events_arrive(reviewed):
    store, by_index = reviewed
    first = store.query(EventQuery(limit=4))
    assert [s.event.id for s in first.events] == [by_index[i] for i in (9, 8, 7, 6)]
    newer = make_event("line1", T0 + 100)  # recorded between two pages: sorts before them
    store.record(newer, MessageType.NEW)
    second = store.query(EventQuery(limit=4, cursor=first.next_cursor))
    assert [s.event.id for s in second.events] == [by_index[i] for i in (5, 4, 3, 2)]
    third = store.query(EventQuery(limit=4, cursor=second.next_cursor))
    assert [s.event.id for s in third.events] == [by_index[1], by_index[0]]
    assert third.next_cursor is None
    exact = store.query(EventQuery(limit=2, cursor=second.next_cursor))  # ends on the last
    assert len(exact.events) == 2 and exact.next_cursor is None
    # the cursor is opaque, URL-safe text naming the last event of the page (the tie kept)
    assert second.next_cursor == encode_cursor(T0 + 2, by_index[2])
    assert set(first.next_cursor) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )
    tie = store.query(EventQuery(limit=1, cursor=encode_cursor(T0 + 4, by_index[5])))
    assert [s.event.id for s in tie.events] == [by_index[4]]  # the tie's other half
    filtered = store.query(EventQuery(limit=2, label=UNLABELLED, cursor=first.next_cursor))
    assert [s.event.id for s in filtered.events] == [by_index[5], by_index[3]]


def test_iterate_reads_every_match_a_page_at_a_time(reviewed):
    store, by_index = reviewed
    everything = [s.event.id for s in store.iterate(EventQuery(limit=1), page_size=3)]
    assert everything == list(reversed(by_index))  # limit ignored, pages of 3 joined
    line1 = [s.event.id for s in store.iterate(EventQuery(camera="line1"), page_size=2)]
    assert line1 == [by_index[i] for i in (8, 6, 4, 2, 0)]
    rest = store.iterate(EventQuery(cursor=encode_cursor(T0 + 2, by_index[2])), page_size=1)
    assert [s.event.id for s in rest] == [by_index[1], by_index[0]]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"label": "maybe"}, "label 'maybe' is not one of true_anomaly, false_positive"),
        ({"limit": 0}, "limit must be at least 1"),
        ({"cursor": "not-a-cursor"}, "cursor: not one this API gave"),
        ({"cursor": encode_cursor(T0, "x")[:-3] + "!!!"}, "cursor: not one this API gave"),
        ({"min_score": float("nan")}, "min_score must be a finite number"),
    ],
)
def test_a_bad_filter_is_refused_with_what_is_wrong(filters, message):
    with pytest.raises(ValueError, match=message):
        EventQuery(**filters)


def test_the_media_cap_prunes_reviewed_events_after_every_unreviewed_one(tmp_path):
    store = open_store(tmp_path)
    events = [make_event("cam", 1000.0 + index) for index in range(4)]
    for event in events:
        store.record(event, MessageType.NEW)
        attach(store, event, MediaKind.FRAME, 1000)
    store.set_label(events[0].id, EventLabel.FALSE_POSITIVE)  # the oldest, reviewed
    store.max_bytes = 1500  # room for one event's evidence
    assert store.enforce_cap() == [event.id for event in events[1:]]
    assert store.media_path(events[0].id, MediaKind.FRAME) is not None
    store.max_bytes = 500
    assert store.enforce_cap() == [events[0].id]
    store.close()
