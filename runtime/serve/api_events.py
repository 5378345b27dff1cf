"""``/api/events``: the events a reviewer reads, labels, deletes and exports.

Every answer comes from the event store (SQLite, read beside the cameras' writes); the
evidence files are served from its media folder only (``EventStore.media_path`` resolves
a stored name and refuses one that leaves the folder), the clip with HTTP Range so a
``<video>`` can seek. A label is review metadata: it is stored beside the event and never
published on MQTT or webhooks.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from enum import Enum
from typing import IO, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from adedge.runtime.records import iso_time
from adedge.runtime.serve.api_types import (
    ConsoleView,
    LabelRequest,
    NotFound,
    Refused,
    ScoreHistory,
)
from adedge.runtime.serve.event_export import csv_lines, write_zip
from adedge.runtime.serve.event_types import MediaKind
from adedge.runtime.serve.http_api import console_view
from adedge.runtime.serve.store import EventInProgress
from adedge.runtime.serve.store_queries import LABELS, UNLABELLED, EventQuery, StoredEvent

router = APIRouter(prefix="/api/events", tags=["events"])

MAX_LIMIT = 500
ZIP_SPOOL_BYTES = 8 * 1024**2  # a zip stays in memory up to this, then in a file unlinked at once
CHUNK_BYTES = 256 * 1024
# the evidence files an event may have: URL name -> (kind, content type)
MEDIA_FILES = {
    "snapshot.jpg": (MediaKind.SNAPSHOT, "image/jpeg"),
    "frame.jpg": (MediaKind.FRAME, "image/jpeg"),
    "heatmap.png": (MediaKind.HEATMAP, "image/png"),
    "clip.mp4": (MediaKind.CLIP, "video/mp4"),
}
TIME_FORMS = "ISO-8601 like 2026-03-01T12:00:00Z, or Unix seconds like 1772366400"
# "+00:00" sent unencoded in a query string arrives as " 00:00": the plus is put back
_SPACED_OFFSET = re.compile(r"^(.*\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")


class ModelOut(BaseModel):
    name: str
    sha256: str
    backend: str


class BoxOut(BaseModel):
    x: int
    y: int
    width: int
    height: int


class EventOut(BaseModel):
    """An event as the store holds it (the MQTT message's fields, times in ISO-8601 UTC),
    with its review label and the URLs of its evidence (only the kinds it has; the trace
    always)."""

    model_config = ConfigDict(extra="allow")  # a field added to events later passes through

    id: str
    node: str
    camera: str
    model: ModelOut
    start: str
    end: str | None
    peak_score: float | None
    peak_time: str
    threshold: float
    threshold_source: str
    end_reason: str | None
    frames: int
    box: BoxOut | None
    media: dict[str, str]
    media_pruned: bool
    labels: dict[str, str]
    duration_s: float | None
    label: str | None
    labelled_at: str | None
    urls: dict[str, str]


class EventPageOut(BaseModel):
    events: list[EventOut]
    next_cursor: str | None  # pass as ``cursor`` for the next (older) page; null: no more


class ExportFormat(str, Enum):
    CSV = "csv"
    ZIP = "zip"


def event_out(stored: StoredEvent) -> dict[str, Any]:
    event = stored.event
    data = event.to_dict()
    data["label"] = None if stored.label is None else stored.label.value
    data["labelled_at"] = None if stored.labelled_at is None else iso_time(stored.labelled_at)
    base = f"/api/events/{event.id}"
    urls = {kind.value: f"{base}/{name}" for name, (kind, _) in MEDIA_FILES.items()}
    data["urls"] = {kind: url for kind, url in urls.items() if MediaKind(kind) in event.media}
    data["urls"]["trace"] = f"{base}/trace.json"
    return data


def parse_time(parameter: str, text: str | None) -> float | None:
    """ISO-8601 (a time without an offset is UTC) or Unix seconds; 422 naming the
    parameter otherwise."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None and math.isfinite(value):
        return value
    iso = _SPACED_OFFSET.sub(r"\1+\2", text)
    if iso[-1:] in ("Z", "z"):
        iso = iso[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise _bad(f"{parameter}: {text!r} is not a time (use {TIME_FORMS})") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def event_filters(
    camera: str | None = Query(None, description="only this camera's events"),
    after: str | None = Query(None, description=f"start at or after ({TIME_FORMS})"),
    before: str | None = Query(None, description=f"start before ({TIME_FORMS})"),
    min_score: float | None = Query(None, description="peak score at least this"),
    in_progress: bool | None = Query(None, description="true: open events; false: ended ones"),
    label: str | None = Query(None, description=f"one of {', '.join(LABELS)}, or none"),
) -> EventQuery:
    """The filters shared by the list and the export, checked (422 with one line)."""
    if min_score is not None and not math.isfinite(min_score):
        raise _bad(f"min_score: {min_score} is not a finite number")
    if label is not None and label not in (*LABELS, UNLABELLED):
        raise _bad(f"label: {label!r} is not one of {', '.join(LABELS)}, {UNLABELLED}")
    return EventQuery(
        camera=camera or None,
        after=parse_time("after", after),
        before=parse_time("before", before),
        min_score=min_score,
        in_progress=in_progress,
        label=label or None,
    )


@router.get("", response_model=EventPageOut)
def list_events(
    filters: EventQuery = Depends(event_filters),
    limit: int = Query(50, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, description="next_cursor of the page before"),
    view: ConsoleView = Depends(console_view),
) -> dict[str, Any]:
    """Events newest first (start time, then id), a page at a time."""
    try:
        query = dataclasses.replace(filters, limit=limit, cursor=cursor or None)
    except ValueError as error:
        raise _bad(str(error)) from None
    page = view.store.query(query)
    return {"events": [event_out(s) for s in page.events], "next_cursor": page.next_cursor}


@router.get(
    "/export",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}, "application/zip": {}}}},
)
def export_events(
    export_format: ExportFormat = Query(ExportFormat.CSV, alias="format"),
    filters: EventQuery = Depends(event_filters),
    view: ConsoleView = Depends(console_view),
) -> Response:
    """Every event that matches, as CSV (one row per event) or as a zip of ``events.csv``,
    ``<label>/<id>.jpg`` snapshots and ``<label>/frames/<id>.jpg`` raw frames
    (``unlabelled/`` when no one reviewed it)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"adedge-events-{view.node}-{stamp}"
    events = view.store.iterate(filters)
    if export_format is ExportFormat.CSV:
        return StreamingResponse(
            csv_lines(events),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    # spooled beside the store (a file unlinked at once on disk, not /tmp, which may be RAM)
    spool = tempfile.SpooledTemporaryFile(ZIP_SPOOL_BYTES, dir=view.store.root)  # noqa: SIM115
    try:
        write_zip(events, view.store.media_path, spool)
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return StreamingResponse(
        _chunks(spool),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{name}.zip"',
            "Content-Length": str(size),
        },
    )


@router.get("/{event_id}", response_model=EventOut)
def get_event(event_id: str, view: ConsoleView = Depends(console_view)) -> dict[str, Any]:
    return event_out(_stored(view, event_id))


def _media_endpoint(file_name: str, kind: MediaKind, content_type: str) -> Any:
    def media(event_id: str, view: ConsoleView = Depends(console_view)) -> FileResponse:
        stored = _stored(view, event_id)
        path = view.store.media_path(event_id, kind)  # None for a name outside the folder
        if path is None:
            if stored.event.media_pruned:
                why = "its evidence was pruned to keep the storage cap"
            elif stored.event.in_progress:
                why = "not written yet: the event is in progress"
            else:
                why = "none was written for it"
            raise NotFound(f"event {event_id} has no {kind.value} ({why})")
        return FileResponse(path, media_type=content_type)

    media.__name__ = f"event_{kind.value}"
    media.__doc__ = f"The event's {kind.value} ({content_type}); 404 when absent or pruned." + (
        " Answers HTTP Range requests (206), so a <video> can seek."
        if kind is MediaKind.CLIP
        else ""
    )
    return media


for _name, (_kind, _type) in MEDIA_FILES.items():
    router.add_api_route(
        f"/{{event_id}}/{_name}",
        _media_endpoint(_name, _kind, _type),
        methods=["GET"],
        response_class=FileResponse,
        responses={200: {"content": {_type: {}}}, 404: {"description": "no such file"}},
    )


@router.get("/{event_id}/trace.json", response_model=ScoreHistory)
def event_trace(event_id: str, view: ConsoleView = Depends(console_view)) -> ScoreHistory:
    """The scores over the event: its stored trace once written, else (an event still open
    or just ended) the camera's recent scores from its start, else none."""
    event = _stored(view, event_id).event
    path = view.store.media_path(event_id, MediaKind.TRACE)
    if path is not None:
        try:
            return ScoreHistory.model_validate_json(path.read_bytes())
        except (OSError, ValidationError):
            pass  # unreadable: the live scores below are the next best
    try:
        recent = view.score_history(event.camera, since=event.start - 1e-3)
    except NotFound:  # a camera no longer configured
        recent = None
    end = math.inf if event.end is None else event.end
    points = [] if recent is None else [p for p in recent.points if event.start <= p.t <= end]
    threshold = event.threshold if recent is None or not points else recent.threshold
    return ScoreHistory(camera=event.camera, threshold=threshold, points=points)


@router.post("/{event_id}/label", response_model=EventOut)
def label_event(
    event_id: str, body: LabelRequest, view: ConsoleView = Depends(console_view)
) -> dict[str, Any]:
    """Store the reviewer's verdict (``null`` clears it); it is not published."""
    stored = view.store.set_label(event_id, body.label)
    if stored is None:
        raise NotFound(f"no event {event_id}", "list the events at /api/events")
    return event_out(stored)


@router.delete("/{event_id}", status_code=204, response_class=Response)
def delete_event(event_id: str, view: ConsoleView = Depends(console_view)) -> Response:
    """Delete an ended event and its evidence (409 while it is in progress). Messages
    already queued for MQTT or webhooks are still delivered."""
    try:
        deleted = view.store.delete(event_id)
    except EventInProgress as error:
        raise Refused(error.message, error.hint) from None
    if not deleted:
        raise NotFound(f"no event {event_id}", "list the events at /api/events")
    return Response(status_code=204)


def _stored(view: ConsoleView, event_id: str) -> StoredEvent:
    stored = view.store.get_stored(event_id)
    if stored is None:
        raise NotFound(f"no event {event_id}", "list the events at /api/events")
    return stored


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    try:
        while True:
            data = handle.read(CHUNK_BYTES)
            if not data:
                return
            yield data
    finally:
        handle.close()


def _bad(detail: str) -> HTTPException:
    return HTTPException(422, detail)
