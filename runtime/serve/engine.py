"""One inference engine per model, shared by every camera that uses it.

Cameras :meth:`~SharedEngine.submit` frames; a single engine thread gathers them into
micro-batches, as Triton's dynamic batcher and DeepStream's ``nvstreammux`` do: a batch
closes when it holds ``max_batch`` rows (a whole-frame stage takes one row per frame, a
tiled stage one per tile), when every active camera has a frame in it (no other frame can
come: waiting longer would only add latency), or ``max_delay_ms`` after its first frame
arrived, whichever comes first. A camera is active while its source is open
(:meth:`~SharedEngine.activate`): one that is offline does not hold the others' batches.
The frames of one batch, from any cameras and of any sizes, go through the
:class:`~adedge.runtime.detector.Detector` in one call, so the tiles of four cameras fill
one inference batch.

Fairness: every camera has its own short queue and the batch is filled round-robin, one
frame per camera per round, starting after the camera served last in the previous batch.
A fast or heavily tiled camera can therefore never take a batch from the others: each
camera with a frame waiting gets a frame into every batch (as long as ``max_batch`` holds
one frame of each). A camera whose queue is full is told so (:class:`Busy`) and counts a
drop; it never blocks the engine.

A model that fails to load puts the engine in ``error``: each submit answers with that
error at once, and the service marks the model's cameras as errored while the others go on.

A model swap (:meth:`~SharedEngine.swap`) waits for the batch in hand to finish and puts
the new detector in before the next one starts: every frame is scored exactly once, by
the old model or the new, and its :class:`Scored` names which (``model``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from adedge.errors import AdedgeError
from adedge.runtime.detector import Detector, FrameScore
from adedge.runtime.frames import batch_rows
from adedge.runtime.serve.event_types import ModelRef
from adedge.runtime.serve.stats import ModelState

QUEUE_PER_CAMERA = 2  # frames a camera may have waiting: one scored, one read ahead


class Busy(AdedgeError):
    """The camera's queue at the engine is full: the frame is dropped (``busy``)."""


@dataclass
class Scored:
    """A frame's result from the engine: the detector's FrameScore and the batch it ran in."""

    result: FrameScore
    batch_frames: int
    batch_rows: int
    queued_s: float  # from submit to the start of its batch
    model: ModelRef | None = None  # the model that scored it (None: not yet named)
    card_threshold: float = float("nan")  # that model's own threshold


@dataclass
class _Request:
    camera: str
    image: np.ndarray
    rows: int
    submitted: float
    future: Future[Scored] = field(default_factory=Future)


@dataclass
class BatchStats:
    """What the engine has run, for the model's stats and metrics."""

    batches: int = 0
    frames: int = 0
    rows: int = 0


BatchObserver = Callable[[int, int, float], None]  # (frames, rows, seconds) per batch


class SharedEngine:
    """Micro-batching scorer for one model (see the module docstring).

    ``load`` builds the Detector (in the engine thread's caller: loading is slow and may
    fail); ``start`` runs the batching thread. ``observe`` is called after every batch.
    """

    def __init__(
        self,
        name: str,
        load: Callable[[], Detector],
        max_batch: int,
        max_delay_ms: float,
        observe: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self._load = load
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000.0
        self.observe = observe
        self.detector: Detector | None = None
        self.ref: ModelRef | None = None  # names the detector in events and results
        self.generation = 0  # detectors put in so far (1 after load, +1 per swap)
        self.loaded_at: float | None = None  # Unix time of the last load or swap
        self.state = ModelState.LOADING
        self.error: str | None = None
        self.stats = BatchStats()
        self._queues: dict[str, deque[_Request]] = {}
        self._order: list[str] = []  # cameras in round-robin order
        self._active: set[str] = set()  # cameras whose source is open
        self._next = 0  # where the next round starts
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._rows_cache: dict[tuple[int, ...], int] = {}
        self._scoring = threading.Lock()  # held while a batch is scored: swaps wait for it

    # --- life -------------------------------------------------------------------------
    def load(self) -> bool:
        """Load the model; on failure keep the one-line reason and answer every submit with
        it. Returns whether it loaded."""
        try:
            self.detector = self._load()
        except AdedgeError as error:
            self.state, self.error = ModelState.ERROR, error.one_line()
            return False
        except Exception as error:  # noqa: BLE001 - any failure marks this model only
            self.state = ModelState.ERROR
            self.error = f"{type(error).__name__}: {error}"
            return False
        self.state = ModelState.READY
        self.generation, self.loaded_at = 1, time.time()
        return True

    def swap(self, detector: Detector, ref: ModelRef) -> Detector | None:
        """Put ``detector`` in between two batches (see the module docstring); returns the
        old one. A model that had failed to load becomes ready."""
        with self._scoring, self._cond:
            old, self.detector, self.ref = self.detector, detector, ref
            self._rows_cache = {}
            self.generation += 1
            self.loaded_at = time.time()
            self.state, self.error = ModelState.READY, None
        self.start()
        return old

    def start(self) -> None:
        if self._thread is None and self.state is ModelState.READY:
            self._thread = threading.Thread(
                target=self._run, name=f"engine-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop after the batch in hand; frames still queued are answered with an error."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            for queue in self._queues.values():
                while queue:
                    request = queue.popleft()
                    if not request.future.done():
                        request.future.set_exception(
                            AdedgeError(f"model '{self.name}' stopped", "")
                        )

    # --- cameras ----------------------------------------------------------------------
    def add_camera(self, camera: str) -> None:
        with self._cond:
            if camera not in self._queues:
                self._queues[camera] = deque()
                self._order.append(camera)

    def remove_camera(self, camera: str) -> None:
        """Forget a camera that was taken out of the config (it has stopped submitting)."""
        with self._cond:
            if camera in self._queues and not self._queues[camera]:
                del self._queues[camera]
                self._order.remove(camera)
                self._active.discard(camera)
                self._next = 0

    def activate(self, camera: str, active: bool = True) -> None:
        """A camera's source opened (``active``) or closed: the batches wait for the frames
        of active cameras only."""
        with self._cond:
            if active:
                self._active.add(camera)
            else:
                self._active.discard(camera)
            self._cond.notify_all()

    def submit(self, camera: str, image: np.ndarray) -> Future[Scored]:
        """Queue a BGR or grey uint8 frame of ``camera``; its Future gives a :class:`Scored`.
        Raises Busy when the camera already has QUEUE_PER_CAMERA frames waiting, and the
        model's error when it failed to load."""
        if self.state is ModelState.ERROR:
            raise AdedgeError(f"model '{self.name}' failed to load: {self.error}", "")
        request = _Request(camera, image, self.rows_for(image), time.monotonic())
        with self._cond:
            if self._stop:
                raise AdedgeError(f"model '{self.name}' stopped", "")
            queue = self._queues[camera]
            if len(queue) >= QUEUE_PER_CAMERA:
                raise Busy(f"camera '{camera}' has {len(queue)} frames waiting", "")
            queue.append(request)
            self._cond.notify_all()
        return request.future

    def queue_depth(self) -> int:
        with self._cond:
            return sum(len(queue) for queue in self._queues.values())

    def rows_for(self, image: np.ndarray) -> int:
        """Batch rows one frame of this size takes: the most any stage takes (1 for a
        whole-frame stage, its tiles for a tiled one), which decides how full a batch is."""
        key = image.shape[:2]
        rows = self._rows_cache.get(key)
        if rows is None:
            detector = self.detector
            if detector is None:
                return 1
            rows = 0
            for stage in detector.stages:
                tiling = stage.spec.tiling
                plan = None if tiling is None else stage.plan(key, tiling)
                rows = max(rows, batch_rows([plan])[0])
            self._rows_cache[key] = rows
        return rows

    # --- the engine thread ------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            self._score(batch)

    def _gather(self) -> list[_Request] | None:
        """The next batch: wait for a first frame, then up to ``max_delay`` for more rows
        (less when every active camera has a frame waiting), filled round-robin across
        cameras. None when stopping."""
        with self._cond:
            while not self._stop and not self._waiting_rows():
                self._cond.wait()
            if self._stop:
                return None
            deadline = time.monotonic() + self.max_delay
            while (
                self._waiting_rows() < self.max_batch
                and not self._every_active_camera_waiting()
                and not self._stop
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._take_round_robin()

    def _every_active_camera_waiting(self) -> bool:
        active = [camera for camera in self._order if camera in self._active]
        return bool(active) and all(self._queues[camera] for camera in active)

    def _waiting_rows(self) -> int:
        return sum(r.rows for queue in self._queues.values() for r in queue)

    def _take_round_robin(self) -> list[_Request]:
        batch: list[_Request] = []
        rows = 0
        count = len(self._order)
        start = self._next
        progressed = True
        while progressed:
            progressed = False
            for step in range(count):
                camera = self._order[(start + step) % count]
                queue = self._queues[camera]
                if not queue:
                    continue
                if batch and rows + queue[0].rows > self.max_batch:
                    continue
                request = queue.popleft()
                batch.append(request)
                rows += request.rows
                progressed = True
        if batch:  # the next batch starts after the last camera served in this one
            last = self._order.index(batch[-1].camera)
            self._next = (last + 1) % count
        self._cond.notify_all()
        return batch

    def _score(self, batch: list[_Request]) -> None:
        with self._scoring:
            detector, ref = self.detector, self.ref
            assert detector is not None
            started = time.monotonic()
            try:
                results = detector.score_frames([request.image for request in batch])
            except Exception as error:  # noqa: BLE001 - the cameras hear of it; the engine goes on
                for request in batch:
                    request.future.set_exception(error)
                return
        seconds = time.monotonic() - started
        rows = sum(request.rows for request in batch)
        self.stats.batches += 1
        self.stats.frames += len(batch)
        self.stats.rows += rows
        if self.observe is not None:
            self.observe(len(batch), rows, seconds)
        for request, result in zip(batch, results, strict=True):
            request.future.set_result(
                Scored(
                    result, len(batch), rows, started - request.submitted, ref, detector.threshold
                )
            )
