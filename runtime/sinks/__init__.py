"""Sinks: where scored frames go (JSONL records, annotated video, a window, the console).

``open_sinks`` turns ``--sink`` URIs (jetson-inference ``videoOutput`` style) into sinks:
``file://out.mp4`` / ``out.avi`` / ``out.mkv`` (annotated video), ``out.jsonl`` /
``jsonl://out.jsonl`` (one record per frame and per event; ``-`` is standard output) and
``display://0`` (an OpenCV window; a clear error where there is no screen, ``--headless``
leaves it out) and ``snapshots://DIR`` (one annotated JPEG per alarm). The sinks live in
``files`` (JSONL, video), ``snapshots``, ``display``, ``console`` and ``tally``, the drawing
in ``annotate``; the names they export are importable from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from adedge.errors import AdedgeError
from adedge.outputs import STDOUT, Existing
from adedge.runtime.sinks.annotate import (
    HEATMAP_ALPHA,
    HEATMAP_COLOURS,
    MIN_VIDEO_SIDE,
    HeatmapScale,
    annotate,
    frame_amap,
    overlay_heatmap,
)
from adedge.runtime.sinks.base import EventSink, Log, Sink
from adedge.runtime.sinks.console import ConsoleSink, ProgressSink, progress_wanted
from adedge.runtime.sinks.display import (
    HEADLESS_HINT,
    DisplaySink,
    WindowClosed,
    display_problem,
    require_display,
)
from adedge.runtime.sinks.files import (
    DEFAULT_SEGMENT_SECONDS,
    EVENTS_SUFFIX,
    FSYNC_SECONDS,
    UNSAFE_WHEN_CUT,
    VIDEO_BACKENDS,
    VIDEO_CODECS,
    JsonlSink,
    VideoSink,
    existing_segments,
    open_video_writer,
    recover_partials,
    segment_path,
)
from adedge.runtime.sinks.snapshots import SnapshotSink, snapshot_name
from adedge.runtime.sinks.tally import DetectionTally
from adedge.uri import parse_uri

SINK_SCHEMES = ("file", "jsonl", "display", "snapshots")


SINK_HINT = (
    "use file://out.mp4|.avi|.mkv (video), out.jsonl or jsonl://out.jsonl, display://0, "
    "snapshots://DIR"
)


class SinkKind(str, Enum):
    JSONL = "jsonl"
    VIDEO = "video"
    DISPLAY = "display"
    SNAPSHOTS = "snapshots"


@dataclass(frozen=True)
class SinkSpec:
    """A parsed ``--sink``: ``kind`` says which sink; ``target`` a path (``-``: stdout, for
    JSONL) or the display number; ``uri`` what the user typed, or the shortcut option
    (``--jsonl``, ``--save-video``) that stands for it (for messages)."""

    kind: SinkKind
    target: str
    uri: str

    @property
    def option(self) -> str:
        return self.uri if self.uri.startswith("--") else f"--sink {self.uri}"


@dataclass(frozen=True)
class SinkSettings:
    """How file sinks open: ``fps`` of video, what to do with an ``existing`` file,
    ``segment_seconds`` of video per file (None: one file; .mp4 is always split), and
    ``log`` for what they report (recovered temporaries, segmenting)."""

    fps: float = 25.0
    existing: Existing = Existing.REFUSE
    segment_seconds: float | None = None
    log: Log | None = None


def parse_sink(text: str) -> SinkSpec:
    """``--sink`` text -> SinkSpec; a one-line AdedgeError for anything not understood."""
    uri = parse_uri(text)
    if not uri.text:
        raise AdedgeError("a --sink is empty", SINK_HINT)
    if not uri.scheme:
        return _path_sink(uri.text, uri.text)
    if uri.scheme == "display":
        number = uri.location.strip("/") or "0"
        if not number.isdigit() or uri.query:
            raise AdedgeError(f"sink '{uri}' does not name a display number", "use display://0")
        return SinkSpec(SinkKind.DISPLAY, number, uri.text)
    if uri.scheme not in SINK_SCHEMES:
        raise AdedgeError(f"sink scheme '{uri.scheme}://' in '{uri}' is not supported", SINK_HINT)
    if not uri.path:
        raise AdedgeError(f"sink '{uri}' names no file", SINK_HINT)
    if uri.scheme == "jsonl":
        return SinkSpec(SinkKind.JSONL, uri.path, uri.text)
    if uri.scheme == "snapshots":
        return SinkSpec(SinkKind.SNAPSHOTS, uri.path, uri.text)
    return _path_sink(uri.path, uri.text)


def _path_sink(path: str, uri: str) -> SinkSpec:
    suffix = Path(path).suffix.lower()
    if suffix == EVENTS_SUFFIX or path == STDOUT:
        return SinkSpec(SinkKind.JSONL, path, uri)
    if suffix in VIDEO_CODECS:
        return SinkSpec(SinkKind.VIDEO, path, uri)
    raise AdedgeError(
        f"sink '{uri}' is not a known file type ({suffix or 'no suffix'})",
        f"use {EVENTS_SUFFIX} for events or {', '.join(VIDEO_CODECS)} for annotated video",
    )


def open_sink(spec: SinkSpec, settings: SinkSettings = SinkSettings()) -> Sink:
    """The sink a SinkSpec names (its threshold is filled in by the stream)."""
    if spec.kind is SinkKind.JSONL:
        return JsonlSink(spec.target, None, settings.existing, option=spec.option, log=settings.log)
    if spec.kind is SinkKind.VIDEO:
        return VideoSink(
            spec.target,
            settings.fps,
            None,
            settings.existing,
            segment_seconds=settings.segment_seconds,
            option=spec.option,
            log=settings.log,
        )
    if spec.kind is SinkKind.SNAPSHOTS:
        return SnapshotSink(spec.target, None, settings.existing, option=spec.option)
    return DisplaySink(int(spec.target))


def parse_sinks(targets: Sequence[str | SinkSpec], *, headless: bool = False) -> list[SinkSpec]:
    """Every ``--sink`` URI (or ready SinkSpec, as the --jsonl/--save-video shortcuts give)
    parsed, checked to name distinct files, without display sinks when ``headless``."""
    specs = [t if isinstance(t, SinkSpec) else parse_sink(t) for t in targets]
    _check_distinct(specs)
    if headless:
        specs = [spec for spec in specs if spec.kind is not SinkKind.DISPLAY]
    return specs


def open_sinks(
    targets: Sequence[str | SinkSpec],
    settings: SinkSettings = SinkSettings(),
    *,
    headless: bool = False,
) -> list[Sink]:
    """Open every sink in order. All are parsed, their files checked and the screen
    checked before any is opened; nothing is written until the stream's first record, so
    a stream that fails to start leaves every existing file as it was. ``headless`` leaves
    out display sinks (``settings.log`` says so)."""
    specs = parse_sinks(targets)
    if headless:
        for spec in specs:
            if spec.kind is SinkKind.DISPLAY and settings.log is not None:
                settings.log(f"--headless: not opening {spec.uri}")
        specs = parse_sinks(specs, headless=True)
    if any(spec.kind is SinkKind.DISPLAY for spec in specs):
        require_display(next(s.uri for s in specs if s.kind is SinkKind.DISPLAY))
    opened: list[Sink] = []
    try:
        for spec in specs:
            opened.append(open_sink(spec, settings))
    except BaseException:
        discard_sinks(opened)
        raise
    return opened


def _check_distinct(specs: Sequence[SinkSpec]) -> None:
    """Two sinks writing one file would each rename over the other's result."""
    seen: dict[Path, str] = {}
    for spec in specs:
        if spec.kind is SinkKind.DISPLAY:
            continue
        key = Path(spec.target).expanduser().resolve()
        if key in seen:
            raise AdedgeError(
                f"sinks '{seen[key]}' and '{spec.uri}' write the same file", "give each its own"
            )
        seen[key] = spec.uri


def discard_sinks(sinks: Sequence[Sink]) -> None:
    """Close sinks that never received a record: they wrote nothing (files are opened by
    their first record), so every existing target is as it was."""
    for sink in sinks:
        sink.close()


__all__ = [
    "DEFAULT_SEGMENT_SECONDS",
    "EVENTS_SUFFIX",
    "FSYNC_SECONDS",
    "HEADLESS_HINT",
    "HEATMAP_ALPHA",
    "HEATMAP_COLOURS",
    "MIN_VIDEO_SIDE",
    "SINK_SCHEMES",
    "UNSAFE_WHEN_CUT",
    "VIDEO_BACKENDS",
    "VIDEO_CODECS",
    "ConsoleSink",
    "DetectionTally",
    "DisplaySink",
    "EventSink",
    "HeatmapScale",
    "JsonlSink",
    "Log",
    "ProgressSink",
    "Sink",
    "SinkKind",
    "SinkSettings",
    "SinkSpec",
    "SnapshotSink",
    "VideoSink",
    "WindowClosed",
    "annotate",
    "discard_sinks",
    "display_problem",
    "existing_segments",
    "frame_amap",
    "open_sink",
    "open_sinks",
    "open_video_writer",
    "overlay_heatmap",
    "parse_sink",
    "parse_sinks",
    "progress_wanted",
    "recover_partials",
    "require_display",
    "segment_path",
    "snapshot_name",
]
