"""The stream's input stage: a reader thread that decodes ahead for files, folders and the
synthetic scene, or, for a live source, short waits on its capture thread so its events are
recorded as they happen.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from adedge.runtime.records import (
    StreamEvent,
)
from adedge.runtime.sources import Frame, FrameSource, LiveSource


@dataclass(frozen=True)
class End:
    """The input is over: ``reason`` becomes the summary's ``stopped_by``."""

    reason: str


@dataclass(frozen=True)
class Failed:
    """An exception in the reader thread, carried to the main thread to be raised there."""

    error: BaseException


POLL_S = 0.05  # queue waits are this short so a failure in another stage is seen promptly
SKIPPED_NAMES = 20  # skipped inputs the summary names
FRAME_SIZES_CHECKED = 16  # distinct frame sizes checked against the model, per stream


class Reader:
    """Decodes the next frames of a file, folder or scene in its own thread while the model
    scores the current ones. Its queue is bounded: once ``queue_size`` frames wait, ``put``
    blocks and decoding pauses, so read-ahead (and memory) stays bounded whatever the speed of
    the model or the sinks. The source's generator lives and is closed in this thread."""

    def __init__(self, source: FrameSource, queue_size: int, limit: int | None) -> None:
        self.source = source
        self.queue: queue.Queue[Frame | StreamEvent | End | Failed] = queue.Queue(
            maxsize=queue_size
        )
        self.failed = False  # the reader's own exception was raised in the main thread
        self.discarded = 0  # frames read ahead and never taken (the stream stopped first)
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(source, limit), name="adedge-reader", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _run(self, source: FrameSource, limit: int | None) -> None:
        frames = iter(source)
        try:
            self._put(self._read(frames, limit))
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            self._put(Failed(exc))
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def _read(self, frames: Iterator[Frame], limit: int | None) -> End:
        count = 0
        while limit is None or count < limit:
            frame = next(frames, None)
            for event in self.source.take_events():  # what happened before this frame
                if not self._put(event):
                    return End("stopped")
            if frame is None:
                return End("end of source")
            count += 1
            if not self._put(frame):
                self.discarded += 1
                return End("stopped")
        return End("max_frames")

    def _put(self, item: Frame | StreamEvent | End | Failed) -> bool:
        """Wait for room in the queue (back-pressure); False once the stream is stopping."""
        while not self._stopping.is_set():
            try:
                self.queue.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self, check: Callable[[], None]) -> Frame | StreamEvent | End:
        """The next frame, event or the end (main thread); ``check`` raises another stage's
        failure."""
        while True:
            try:
                item = self.queue.get(timeout=POLL_S)
            except queue.Empty:
                check()
                continue
            if isinstance(item, Failed):
                self.failed = True
                raise item.error
            return item

    def stop(self) -> None:
        """Stop reading, wait for the thread, count the frames it read that were never taken."""
        self._stopping.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=30.0)
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            self.discarded += isinstance(item, Frame)


class LiveInput:
    """A live source needs no reader: its capture thread already keeps only the newest frame,
    and a queue in front of the model would make it score the past. Read in the main thread,
    in short waits, so the source's events (a gap, a reopen attempt) are recorded as they
    happen, not when frames come back."""

    failed = False
    discarded = 0

    def __init__(self, source: LiveSource) -> None:
        self.source = source
        self.taken = 0
        self._pending: deque[Frame | StreamEvent] = deque()

    def start(self) -> None:
        pass

    def get(self, check: Callable[[], None]) -> Frame | StreamEvent | End:
        limit = self.source.max_frames
        while not self._pending:
            check()
            if limit is not None and self.taken >= limit:
                return End("max_frames")
            frame = self.source.take(POLL_S * 10)
            items: list[Frame | StreamEvent] = [*self.source.take_events()]
            if frame is not None:
                items.append(frame)
                self.taken += 1
            elif not items and self.source.ended:
                return End("end of source")
            self._pending.extend(sorted(items, key=lambda item: item.wall))
        return self._pending.popleft()

    def stop(self) -> None:
        self.source.close()
