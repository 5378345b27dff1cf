"""What a stream did: counts, rates, latency percentiles per stage, and how it ended
(:class:`StreamSummary`), with the table the terminal shows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

STAGE_ORDER = ("read_ms", "preprocess_ms", "infer_ms", "sink_ms", "total_ms")
PERCENTILES = (50, 95, 99)


@dataclass
class StreamSummary:
    """What a stream did. ``frames_read = frames_scored + frames_skipped + frames_unscored``;
    ``frames_scored`` are the results handed to the sinks; ``frames_unscored`` is non-zero
    only when an interrupt hit while a batch was filling. ``frames_skipped`` includes the
    ``frames_rejected`` (by reason); ``frames_converted`` counts conversions by reason.
    ``frames_discarded``: in flight when the stream stopped, never written (not in
    ``frames_read``). ``frames_left_out``: passed over by ``every`` (not read).
    ``skipped_names``: the first ``SKIPPED_NAMES`` inputs skipped (files, or a video with
    the frame position). ``gaps``/``gap_seconds``: stretches a live source had no frames.
    ``frames_with_regions``: frames with a heatmap region above the pixel threshold larger
    than the minimum area (each anomalous, whatever its score). ``alarms`` counts alarms
    raised: runs of ``alarm_frames`` consecutive anomalous frames (a run counts once however
    long it lasts). ``exit_code``: what the command should exit
    with, 0, or 130 after Ctrl-C and 143 after SIGTERM (0 after q in a display window)."""

    source: str
    backend: str
    threshold: float
    batch: int
    frames_read: int = 0
    frames_scored: int = 0
    frames_skipped: int = 0
    frames_dropped: int = 0
    frames_unscored: int = 0
    frames_discarded: int = 0
    frames_converted: dict[str, int] = field(default_factory=dict)
    frames_rejected: dict[str, int] = field(default_factory=dict)
    frames_left_out: int = 0
    skipped_names: list[str] = field(default_factory=list)
    anomalies: int = 0
    frames_with_regions: int = 0  # pixel decisions: frames with a region above min_area
    alarms: int = 0
    alarm_frames: int = 1
    gaps: int = 0
    gap_seconds: float = 0.0
    wall_s: float = 0.0
    fps: float = 0.0
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    interrupted: bool = False
    stopped_by: str = "end of source"
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        """A small table for the terminal."""
        lines = [
            f"source   {self.source}",
            f"frames   {self.frames_read} read, {self.frames_scored} scored, "
            f"{self.frames_skipped} skipped, {self.frames_dropped} dropped, "
            f"{self.anomalies} anomalous (threshold {self.threshold:.4g}"
            + (
                f"; {self.frames_with_regions} with a region above the pixel threshold)"
                if self.frames_with_regions
                else ")"
            ),
            f"time     {self.wall_s:.2f} s, {self.fps:.1f} frames/s "
            f"(backend {self.backend}, batch {self.batch}); ended by {self.stopped_by}",
        ]
        if self.frames_left_out:
            lines.append(f"         {self.frames_left_out} left out by --every")
        if self.skipped_names:
            more = self.frames_skipped - len(self.skipped_names)
            names = ", ".join(self.skipped_names) + (f" and {more} more" if more > 0 else "")
            lines.append(f"         skipped: {names}")
        if self.frames_unscored:
            lines.append(f"         {self.frames_unscored} read but not scored (interrupted)")
        if self.frames_discarded:
            lines.append(f"         {self.frames_discarded} in flight when stopped, not written")
        if self.frames_converted:
            lines.append(f"         converted: {_reasons(self.frames_converted)}")
        if self.frames_rejected:
            lines.append(f"         rejected (skipped): {_reasons(self.frames_rejected)}")
        if self.gaps:
            lines.append(
                f"gaps     {self.gaps} without frames, {self.gap_seconds:.2f} s in all "
                "(source reopened)"
            )
        lines.append(
            f"alarms   {self.alarms} raised "
            f"({self.alarm_frames} consecutive anomalous frame{'s' * (self.alarm_frames > 1)})"
        )
        if self.latency_ms:
            names = [f"p{p}" for p in PERCENTILES]
            lines.append(f"{'latency ms':<16}" + "".join(f"{n:>10}" for n in names))
            for stage, values in self.latency_ms.items():
                cells = "".join(_cell(values.get(n)) for n in names)
                lines.append(f"  {stage.removesuffix('_ms'):<14}{cells}")
        return "\n".join(lines)


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))


def _cell(value: float | None) -> str:
    return f"{'-':>10}" if value is None else f"{value:>10.3f}"


class Latencies:
    """Per-stage latencies of the most recent ``window`` frames."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.values: dict[str, deque[float]] = {}

    def add(self, stage: str, ms: float) -> None:
        self.values.setdefault(stage, deque(maxlen=self.window)).append(ms)

    def percentiles(self) -> dict[str, dict[str, float]]:
        order = {name: i for i, name in enumerate(STAGE_ORDER)}
        unknown = order["total_ms"] - 0.5  # a detector's extra stages go before the total
        stages = sorted(self.values, key=lambda s: (order.get(s, unknown), s))
        out = {}
        for stage in stages:
            values = np.percentile(np.fromiter(self.values[stage], float), PERCENTILES)
            out[stage] = {f"p{p}": float(v) for p, v in zip(PERCENTILES, values, strict=True)}
        return out
