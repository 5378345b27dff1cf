"""Sources that end: image files (a folder, a glob, one image) and video files.

Every frame, in order; an image or frame that cannot be decoded is skipped, counted and
recorded (``events``), never fatal. A path is images when it is a folder, a glob or has an
image suffix, else a video.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from adedge.data import IMAGE_SUFFIXES, expand_image_glob, read_image
from adedge.errors import AdedgeError, SourceError
from adedge.runtime.records import FrameSkipped
from adedge.runtime.sources.base import Frame, FrameSource

GLOB_CHARS = ("*", "?", "[")


VIDEO_EOF_RETRIES = 25  # consecutive failed grabs that mean end of file, not a corrupt frame


class ImageFolderSource(FrameSource):
    """Image files in name order; ``name`` is the file path, unreadable files are skipped."""

    def __init__(self, spec: str, paths: list[Path], **options: Any) -> None:
        super().__init__(spec, **options)
        self.paths = paths
        self._opened = time.monotonic()

    def _frames(self) -> Iterator[Frame]:
        position = 0
        while not self.closed:
            produced = False
            for path in self.paths:
                index, position = position, position + 1
                if not self._kept(index):
                    continue
                image, problem = _read_bgr(path)
                if image is None:
                    self.skipped += 1
                    self.events.append(FrameSkipped(str(path), problem, position=index))
                    continue
                produced = True
                yield Frame(index, time.monotonic() - self._opened, image, str(path))
            if not (self.loop and produced):
                return

    def _positions(self) -> int | None:
        return len(self.paths)

    def describe(self) -> str:
        return f"images '{self.label}' ({len(self.paths)} files)"


def _read_bgr(path: Path) -> tuple[np.ndarray | None, str]:
    """(the image as BGR/grey uint8, "") or (None, why it cannot be decoded)."""
    try:
        image = read_image(path)
    except AdedgeError as exc:
        return None, exc.message
    return (cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image), ""


def _open_images(spec: str, **options: Any) -> ImageFolderSource:
    paths = expand_image_glob(spec)
    if not paths:
        kind = "folder" if Path(spec).is_dir() else "pattern"
        raise SourceError(
            f"no images in {kind} '{spec}'",
            f"put {', '.join(IMAGE_SUFFIXES[:4])} files there or check the pattern",
        )
    return ImageFolderSource(spec, paths, **options)


# --- video files -------------------------------------------------------------------------


class VideoFileSource(FrameSource):
    """Every frame of a video file, timestamped by its position in the video."""

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(path, **options)
        self.path = path
        self._cap = _open_video(path)
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.video_fps = float(self._cap.get(cv2.CAP_PROP_FPS)) or 25.0
        self.size = (
            int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )

    def _frames(self) -> Iterator[Frame]:
        base_index, base_time = 0, 0.0
        while not self.closed:
            count, produced = yield from self._one_pass(base_index, base_time)
            if not (self.loop and produced) or self.closed:
                return
            base_index += count
            base_time += count / self.video_fps
            self._cap.release()
            self._cap = _open_video(self.path)

    def _one_pass(
        self, base_index: int, base_time: float
    ) -> Generator[Frame, None, tuple[int, bool]]:
        """Frames of one pass over the file; returns (positions read, any frame produced).

        A failed grab is a corrupt frame if a later grab succeeds (counted as skipped), the
        end of the file if it is past the frame count or ``VIDEO_EOF_RETRIES`` fail in a row
        (failures just before the end are not counted: the frame count may be an estimate).
        """
        position, failed, produced = 0, [], False
        while not self.closed:
            if not self._cap.grab():
                if 0 < self.frame_count <= position or len(failed) + 1 >= VIDEO_EOF_RETRIES:
                    return position - len(failed), produced
                failed.append(position)
                position += 1
                continue
            self._skip_corrupt([base_index + p for p in failed if self._kept(base_index + p)])
            failed = []
            index, position = base_index + position, position + 1
            if not self._kept(index):
                continue
            ok, image = self._cap.retrieve()
            if not ok or image is None or image.size == 0:
                self._skip_corrupt([index])
                continue
            produced = True
            timestamp = base_time + self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1e3
            yield Frame(index, timestamp, image, self.path)
        return position, produced

    def _skip_corrupt(self, positions: list[int]) -> None:
        self.skipped += len(positions)
        for position in positions:
            self.events.append(FrameSkipped(self.path, "frame cannot be decoded", position))

    def _positions(self) -> int | None:
        return self.frame_count if self.frame_count > 0 else None

    def describe(self) -> str:
        width, height = self.size
        return (
            f"video '{self.path}' ({self.frame_count} frames, {width}x{height} "
            f"@ {self.video_fps:g} fps)"
        )

    def close(self) -> None:
        super().close()
        self._cap.release()


def _open_video(path: str) -> cv2.VideoCapture:
    if not Path(path).is_file():
        raise SourceError(
            f"cannot open video '{path}': no such file",
            "check the path, or pass a folder of images, camera0 or synthetic",
        )
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise SourceError(
            f"cannot open video '{path}': OpenCV cannot decode it",
            "check the path and codec, or re-encode it, e.g. `ffmpeg -i IN -c:v mjpeg out.avi`",
        )
    return cap


def _open_path(path: str, **options: Any) -> FrameSource:
    """A folder, a glob or a single image are images; any other path is a video file."""
    target = Path(path)
    is_glob = any(c in path for c in GLOB_CHARS)
    is_image = target.suffix.lower() in IMAGE_SUFFIXES
    if target.is_dir() or is_glob or is_image:
        if is_image and not is_glob and not target.exists():
            raise SourceError(f"image '{path}' does not exist", "check the path")
        return _open_images(path, **options)
    return VideoFileSource(path, **options)
