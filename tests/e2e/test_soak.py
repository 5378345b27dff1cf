"""Soak: a long synthetic stream keeps memory flat and accounts for every frame (a camera
stream runs for days on a device with little memory).

20,000 frames of the synthetic scene go through the real mean bundle with the JSONL sink,
the detection tally, the console sink (to /dev/null) and a 3-frame alarm filter. The
resident set size is sampled every 1,000 frames from /proc/self/status. After the first
1,000 frames (imports, ONNX Runtime arenas, first allocations) it may grow by at most
``RSS_GROWTH_BOUND_MB`` by the end. What legitimately grows meanwhile: the latency window
until it is full at frame 10,000 (6 stages x 10,000 floats, about 2 MB) and the tally's
typed arrays (17 bytes a frame, 0.3 MB); so over the second 10,000 frames, with the window
full, growth must stay below ``FULL_WINDOW_BOUND_MB``: a leak of even 250 bytes a frame fails.
"""

from __future__ import annotations

import json
import os
import resource
from collections import Counter
from pathlib import Path

import pytest

from adedge.runtime.detector import Detector, FrameScore
from adedge.runtime.sinks import ConsoleSink, DetectionTally, JsonlSink
from adedge.runtime.sources import Frame, open_source
from adedge.runtime.stream import StreamOptions, run_stream

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed

SOAK_FRAMES = 20_000
SAMPLE_EVERY = 1_000
LATENCY_WINDOW = StreamOptions().latency_window  # 10,000 frames
RSS_GROWTH_BOUND_MB = 30.0
FULL_WINDOW_BOUND_MB = 2.5


def rss_mb() -> float:
    """Resident set size now, MB (VmRSS; the peak from getrusage where /proc is missing)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class RssProbe:
    """A sink that samples RSS every ``every`` frames (after the sinks before it wrote)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.count = 0
        self.samples: dict[int, float] = {}

    def write(self, frame: Frame, result: FrameScore) -> None:
        self.count += 1
        if self.count % self.every == 0:
            self.samples[self.count] = rss_mb()

    def close(self) -> None:
        pass


def test_soak_memory_stays_flat_and_every_frame_is_accounted_for(tmp_path, mean_bundle):
    events = tmp_path / "events.jsonl"
    probe = RssProbe(SAMPLE_EVERY)
    tally = DetectionTally()
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        summary = run_stream(
            Detector(mean_bundle, threads=1),
            open_source("synthetic:size=64,seed=11", max_frames=SOAK_FRAMES),
            [JsonlSink(events), tally, ConsoleSink(quiet=True, stream=devnull), probe],
            StreamOptions(batch=8, alarm_frames=3),
        )
    end = rss_mb()

    # every frame accounted for: processed + dropped + skipped = read, all in the events file
    assert summary.frames_read == SOAK_FRAMES and not summary.interrupted
    assert (
        summary.frames_scored + summary.frames_dropped + summary.frames_skipped
        == summary.frames_read
    )
    assert summary.frames_unscored == 0
    with events.open(encoding="utf-8") as lines:
        kinds = Counter(json.loads(line)["type"] for line in lines)
    assert kinds["frame"] == summary.frames_scored == SOAK_FRAMES
    assert kinds["start"] == kinds["end"] == 1
    assert kinds["alarm_start"] == kinds["alarm_end"] == summary.alarms
    assert len(tally.truths) == SOAK_FRAMES and sum(tally.truths) == SOAK_FRAMES // 10

    # memory: flat after the first 1,000 frames, flatter still once the latency window is full
    samples = probe.samples
    growth = max(end, *samples.values()) - samples[SAMPLE_EVERY]
    full_window = max(samples[n] for n in samples if n >= LATENCY_WINDOW) - samples[LATENCY_WINDOW]
    trace = ", ".join(f"{n}: {mb:.1f}" for n, mb in sorted(samples.items()))
    print(
        f"\nsoak: {SOAK_FRAMES} frames in {summary.wall_s:.1f} s ({summary.fps:.0f} fps); "
        f"RSS MB at frame {trace}; after the stream {end:.1f}. Growth after frame "
        f"{SAMPLE_EVERY}: {growth:.2f} MB (bound {RSS_GROWTH_BOUND_MB:g}); from frame "
        f"{LATENCY_WINDOW} to {SOAK_FRAMES}: {full_window:.2f} MB (bound {FULL_WINDOW_BOUND_MB:g})"
    )
    assert growth < RSS_GROWTH_BOUND_MB, trace
    assert full_window < FULL_WINDOW_BOUND_MB, trace
