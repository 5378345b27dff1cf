"""What every source is: a :class:`Frame`, the :class:`Gap` of a live source, and
:class:`FrameSource`, which applies the options all sources share (``every``,
``max_frames``, the ``fps`` cap, ``resize``, known truth) the same way; ``--resize``
parsing.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from adedge.bundle import MAX_SIDE
from adedge.errors import SourceError
from adedge.preprocess import resize
from adedge.runtime.records import StreamEvent


@dataclass
class Frame:
    """One frame as the stream sees it; ``image`` is BGR uint8 (H, W, 3) or grey (H, W).
    ``timestamp``: seconds on the source's own clock; ``wall``: Unix time it was read."""

    index: int
    timestamp: float
    image: np.ndarray
    name: str
    truth: bool | None = None  # known defect label (synthetic scene, a truth CSV)
    wall: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Gap:
    """A stretch without frames from a live source: when it began (Unix time), how long it
    lasted, how many reopen attempts it took, and whether frames came back afterwards."""

    start: float
    seconds: float
    reopens: int
    recovered: bool = True


class FrameSource:
    """Iterable of :class:`Frame`; subclasses implement :meth:`_frames`.

    The base class applies ``max_frames`` and the ``fps`` cap so every source honours them
    the same way; subclasses apply ``every`` on their own frame positions (a video must
    still grab the frames it does not keep).
    """

    live: bool = False

    def __init__(
        self,
        label: str,
        *,
        every: int = 1,
        max_frames: int | None = None,
        fps: float | None = None,
        loop: bool = False,
        resize: tuple[int, int] | None = None,
        truth: Mapping[int, bool] | None = None,
    ) -> None:
        _check_options(every, max_frames, fps)
        self.label = label
        self.every = every
        self.max_frames = max_frames
        self.fps = fps
        self.loop = loop
        self.resize = resize
        self.dropped = 0
        self.skipped = 0
        self.left_out = 0  # frames passed over by ``every``
        self.closed = False
        self.gaps: list[Gap] = []  # live sources: stretches without frames (see LiveSource)
        # known labels by frame index (e.g. the CSV `adedge video` writes)
        self.truth: dict[int, bool] = dict(truth or {})
        # what the stream should record, in order (appended by the reading thread)
        self.events: deque[StreamEvent] = deque()

    def __iter__(self) -> Iterator[Frame]:
        if self.max_frames == 0:
            return
        pace = _Pacer(None if self.live else self.fps)
        for count, frame in enumerate(self._frames(), start=1):
            pace.wait()
            yield self._finish(frame)
            if self.max_frames is not None and count >= self.max_frames:
                return

    def _finish(self, frame: Frame) -> Frame:
        """Known truth and ``resize`` applied: the frame as it leaves the source."""
        if frame.truth is None and frame.index in self.truth:
            frame.truth = self.truth[frame.index]
        if self.resize is not None:
            width, height = self.resize
            frame.image = resize(frame.image, height, width)
        return frame

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def expected_frames(self) -> int | None:
        """How many frames this source will give, where known (for a progress bar)."""
        count = None if self.live or self.loop else self._positions()
        if count is not None:
            count = -(-count // self.every)  # positions kept by `every`
        if self.max_frames is None:
            return count
        return self.max_frames if count is None else min(count, self.max_frames)

    def _positions(self) -> int | None:
        """Frame positions in one pass over the source (before ``every``); None: unknown."""
        return None

    def _keep(self, position: int) -> bool:
        return position % self.every == 0

    def _kept(self, position: int) -> bool:
        """Whether ``every`` keeps this position; counts the ones it leaves out."""
        keep = self._keep(position)
        self.left_out += not keep
        return keep

    def take_events(self) -> list[StreamEvent]:
        """The events queued since the last call, oldest first (safe from any thread)."""
        taken = []
        while True:
            try:
                taken.append(self.events.popleft())
            except IndexError:
                return taken

    def describe(self) -> str:
        return self.label

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_options(every: int, max_frames: int | None, fps: float | None) -> None:
    if not isinstance(every, int) or every < 1:
        raise SourceError(f"every={every} is not a positive integer", "pass --every 1 or more")
    if max_frames is not None and max_frames < 0:
        raise SourceError(f"max_frames={max_frames} is negative", "pass 0 or more frames")
    if fps is not None and not fps > 0:
        raise SourceError(f"fps={fps} is not positive", "pass a rate such as --fps 10")


def parse_resize(text: str) -> tuple[int, int]:
    """``'640x480'`` -> (640, 480); anything else is a one-line SourceError."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None or min(int(match.group(1)), int(match.group(2))) < 1:
        raise SourceError(
            f"resize '{text}' is not WIDTHxHEIGHT in pixels", "pass e.g. --resize 640x480"
        )
    return check_resize((int(match.group(1)), int(match.group(2))))


def check_resize(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` (W, H) if each side is 1..MAX_SIDE (the largest image side adedge handles,
    as for a card); a one-line SourceError otherwise."""
    if min(size) < 1 or max(size) > MAX_SIDE:
        raise SourceError(
            f"resize {size[0]}x{size[1]} is outside 1..{MAX_SIDE} pixels per side",
            "pass a frame size such as --resize 640x480",
        )
    return size


class _Pacer:
    """Sleeps so that frames leave no faster than ``fps`` (None: no cap)."""

    def __init__(self, fps: float | None) -> None:
        self.period = 0.0 if fps is None else 1.0 / fps
        self.next_time: float | None = None

    def wait(self) -> None:
        if not self.period:
            return
        now = time.monotonic()
        if self.next_time is not None and now < self.next_time:
            time.sleep(self.next_time - now)
            now = self.next_time
        self.next_time = now + self.period
