"""Alarm snapshots: one annotated JPEG per alarm, written as the alarm is raised.

``--snapshots DIR`` (or ``--sink snapshots://DIR``) keeps, for every alarm of a stream, the
frame that raised it, drawn as the annotated video draws it (score bar, outlined regions),
as ``DIR/alarm-<frame>.jpg``. This is what ``adedge serve`` keeps as an event's evidence,
for a single stream without the service. Each file is written whole (temporary name, then
rename), so a killed stream leaves only complete pictures.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2

from adedge.atomic import atomic_path
from adedge.errors import AdedgeError
from adedge.outputs import Existing, check_creatable
from adedge.runtime.detector import FrameScore
from adedge.runtime.sinks.annotate import HeatmapScale, annotate
from adedge.runtime.sources import Frame

SNAPSHOT_PATTERN = "alarm-*.jpg"
JPEG_QUALITY = 90


def snapshot_name(index: int) -> str:
    """The file of the alarm raised at frame ``index`` (sorted names follow frame order)."""
    return f"alarm-{index:07d}.jpg"


class SnapshotSink:
    """Writes the frame that raises each alarm (``result.alarm`` turning on) into ``folder``.

    A folder holding an earlier run's snapshots is refused unless ``existing`` says to
    replace them (removed at the first snapshot, so a stream that fails to start loses
    nothing) or to add to them (--append)."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        threshold: float | None = None,
        existing: Existing = Existing.REFUSE,
        *,
        option: str = "--snapshots",
    ) -> None:
        self.folder = Path(folder).expanduser()
        self.option = option
        if self.folder.exists() and not self.folder.is_dir():
            raise AdedgeError(
                f"{option} '{folder}' is a file", f"give {option} a folder for the snapshots"
            )
        check_creatable(self.folder / "alarm.jpg", option)
        self.old = sorted(self.folder.glob(SNAPSHOT_PATTERN)) if self.folder.is_dir() else []
        if self.old and existing is Existing.REFUSE:
            raise AdedgeError(
                f"{option} '{folder}' holds {len(self.old)} snapshots of an earlier run",
                "pass --overwrite to replace them, --append to add to them, or choose "
                "another folder",
            )
        self.existing = existing
        self.threshold = threshold
        self.heat = HeatmapScale()
        self.in_alarm = False
        self.snapshots: list[Path] = []
        self.closed = False

    def write(self, frame: Frame, result: FrameScore) -> None:
        raised = bool(result.alarm) and not self.in_alarm
        self.in_alarm = bool(result.alarm)
        if not raised:
            return
        if not self.snapshots:
            self._start()
        path = self.folder / snapshot_name(frame.index)
        image = annotate(frame.image, frame.index, result, self.threshold, self.heat)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise AdedgeError(f"OpenCV could not encode the snapshot of frame {frame.index}")
        with atomic_path(path) as temporary:
            temporary.write_bytes(data.tobytes())
        self.snapshots.append(path)

    @property
    def written(self) -> list[Path]:
        """What the stream reports as written: the folder, once it holds a snapshot."""
        return [self.folder] if self.snapshots else []

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.existing is Existing.OVERWRITE:
            for old in self.old:
                old.unlink(missing_ok=True)

    def close(self) -> None:
        self.closed = True
