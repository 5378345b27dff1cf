"""The terminal: one line per frame on stdout and one per event on stderr, and a progress bar
for sources that end.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from adedge.errors import AdedgeError
from adedge.runtime.detector import FrameScore
from adedge.runtime.records import StreamEvent
from adedge.runtime.sources import Frame, FrameSource


class ConsoleSink:
    """One line per frame on stdout: index, score, NORMAL/ANOMALY (+ ALARM), name; and one
    line per event (a skipped file, a live source dropping and coming back, each reopen
    attempt, an alarm switching on and off) on stderr, with the wall-clock time.

    Prints every ``every``-th frame and every anomaly; ``quiet`` prints anomalies only
    (events always). ``stream``/``errors`` default to stdout/stderr.
    """

    QUIET_EVENTS = ("start", "end")  # the command prints these itself

    def __init__(
        self,
        every: int = 1,
        quiet: bool = False,
        stream: TextIO | None = None,
        errors: TextIO | None = None,
    ) -> None:
        if every < 1:
            raise AdedgeError(f"console every={every} is not positive", "pass 1 or more")
        self.every = every
        self.quiet = quiet
        self.stream = stream
        self.errors = errors
        self.count = 0

    def event(self, event: StreamEvent) -> None:
        if event.kind in self.QUIET_EVENTS:
            return
        out = self.errors or sys.stderr
        clock = datetime.fromtimestamp(event.wall).strftime("%H:%M:%S")
        out.write(f"{clock} {event.message()}\n")
        out.flush()

    def write(self, frame: Frame, result: FrameScore) -> None:
        self.count += 1
        due = (self.count - 1) % self.every == 0 and not self.quiet
        if not (due or result.anomalous):
            return
        label = "ANOMALY" if result.anomalous else "NORMAL"
        alarm = "  ALARM" if result.alarm else ""
        truth = "" if frame.truth is None else f"  truth={'defect' if frame.truth else 'normal'}"
        line = f"frame {frame.index:>7d}  score {result.score:>10.4f}  {label:<7}  {frame.name}"
        out = self.stream or sys.stdout
        out.write(line + alarm + truth + "\n")  # one call: an interrupt never splits a line
        out.flush()

    def close(self) -> None:
        (self.stream or sys.stdout).flush()


class _RateColumn(ProgressColumn):
    """Frames per second over rich's recent window."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f} fps", style="progress.data.speed")


class ProgressSink:
    """A rich progress line on stderr while files, folders or the synthetic scene stream:
    frames done of those expected, rate, anomalies, time left. Create it only where
    :func:`progress_wanted` says so: a bar in a log file or a CI transcript is noise."""

    def __init__(
        self, total: int | None, description: str = "streaming", console: Console | None = None
    ) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TextColumn("{task.fields[events]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task(description, total=total, events="")
        self.anomalies = 0
        self.alarms = 0
        self._alarm_on = False
        self.started = False

    def write(self, frame: Frame, result: FrameScore) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        alarm = bool(result.alarm)
        self.alarms += alarm and not self._alarm_on
        self._alarm_on = alarm
        self.anomalies += bool(result.anomalous)
        events = f"{self.anomalies} anomalous, {self.alarms} alarms"
        self.progress.update(self.task, advance=1, events=events)

    def close(self) -> None:
        if self.started:
            self.progress.stop()
            self.started = False


def progress_wanted(source: FrameSource, streams: Sequence[TextIO] | None = None) -> bool:
    """A progress line only for sources that end (not cameras), and only when stdout and
    stderr are both a terminal (rich moves stdout lines above the bar) and not under CI."""
    if source.live or os.environ.get("CI"):
        return False
    for stream in (sys.stdout, sys.stderr) if streams is None else streams:
        isatty = getattr(stream, "isatty", None)
        if isatty is None or not isatty():
            return False
    return True
