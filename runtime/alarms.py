"""From per-frame labels to alarms and their records, and a watch on how the stream fits the
model.

``FrameScore.anomalous`` is the per-frame label; :class:`AlarmFilter` sets the alarm once
``frames`` consecutive frames are anomalous, so one noisy frame on a production line raises
nothing. :class:`AlarmTracker` turns the alarm's switching into ``alarm_start`` and
``alarm_end`` records (:mod:`adedge.runtime.records`): the log says when an alarm began, how
long it lasted and its peak score, instead of a state repeated on every frame.

:class:`FitWatch` warns, once, when nearly every frame of a stream is anomalous: almost
always frames unlike the training images (the demo's 8x8 digit model on a street video), not
a production line that is broken from its first frame.
"""

from __future__ import annotations

import math

from adedge.errors import AdedgeError
from adedge.runtime.detector import FrameScore
from adedge.runtime.records import AlarmEnded, AlarmStarted, StreamEvent, StreamWarning
from adedge.runtime.sources import Frame

FIT_FRAMES = 50  # frames seen before judging the share of anomalous ones
FIT_SHARE = 0.8  # this share or more anomalous: the frames probably do not fit the model


class AlarmFilter:
    """Turns per-frame labels into alarms: on only after ``frames`` consecutive anomalous
    frames, so a single noisy frame raises nothing; it stays on until a normal frame.

    "Consecutive" means consecutive scored frames: on a live source the frames dropped in
    between are not seen. A frame whose score is not a number is not anomalous and breaks
    the run.
    """

    def __init__(self, frames: int = 1) -> None:
        if frames < 1:
            raise AdedgeError(f"alarm frames must be 1 or more (got {frames})", "pass 1 or more")
        self.frames = frames
        self.run = 0
        self.raised = 0

    def update(self, anomalous: bool) -> bool:
        """Take the next frame's label; returns whether the alarm is on for that frame."""
        self.run = self.run + 1 if anomalous else 0
        if self.run == self.frames:
            self.raised += 1
        return self.run >= self.frames


class AlarmTracker:
    """Sets each result's ``alarm`` and reports where an alarm starts and ends."""

    def __init__(self, frames: int = 1) -> None:
        self.filter = AlarmFilter(frames)
        self._start: Frame | None = None
        self._frames = 0
        self._peak = -math.inf
        self._last: Frame | None = None

    @property
    def raised(self) -> int:
        return self.filter.raised

    def observe(self, frame: Frame, result: FrameScore) -> list[StreamEvent]:
        """Set ``result.alarm`` for this frame; the events it causes, to record after it."""
        on = self.filter.update(bool(result.anomalous))
        result.alarm = on
        events: list[StreamEvent] = []
        if on:
            if self._start is None:
                self._start, self._frames, self._peak = frame, 0, -math.inf
                events.append(
                    AlarmStarted(
                        frame.index, frame.timestamp, float(result.score), self.filter.frames
                    )
                )
            self._frames += 1
            if math.isfinite(result.score):
                self._peak = max(self._peak, float(result.score))
        elif self._start is not None:
            events.append(self._ended(frame, "normal frame"))
        self._last = frame
        return events

    def finish(self, reason: str) -> list[StreamEvent]:
        """An alarm still on when the stream ends is closed at the last frame."""
        if self._start is None or self._last is None:
            return []
        return [self._ended(self._last, reason)]

    def _ended(self, frame: Frame, reason: str) -> AlarmEnded:
        start, self._start = self._start, None
        assert start is not None
        seconds = max(0.0, frame.timestamp - start.timestamp)
        peak = self._peak if math.isfinite(self._peak) else math.nan
        return AlarmEnded(frame.index, frame.timestamp, self._frames, seconds, peak, reason)


class FitWatch:
    """Warns once when at least ``share`` of the first ``frames`` scored frames are
    anomalous; ``hint`` names what the model was trained on."""

    def __init__(self, hint: str, frames: int = FIT_FRAMES, share: float = FIT_SHARE) -> None:
        self.hint, self.frames, self.share = hint, frames, share
        self.seen = self.anomalous = 0
        self.warned = False

    def observe(self, result: FrameScore) -> list[StreamEvent]:
        if self.warned or self.seen >= self.frames:
            return []
        self.seen += 1
        self.anomalous += bool(result.anomalous)
        if self.seen < self.frames or self.anomalous < self.share * self.frames:
            return []
        self.warned = True
        return [
            StreamWarning(
                f"{self.anomalous} of the first {self.frames} frames are above the threshold: "
                f"are these frames like the images the model was trained on ({self.hint})? "
                "Score frames of the same scene, or train on normal frames of this one"
            )
        ]
