"""A window on the screen (``display://N``), and the check that one can open here at all."""

from __future__ import annotations

import os
import re
import sys

import cv2

from adedge.errors import AdedgeError
from adedge.runtime.detector import FrameScore
from adedge.runtime.sinks.annotate import HeatmapScale, annotate
from adedge.runtime.sources import Frame

HEADLESS_HINT = "run with --headless (or without --sink display://) to stream without a window"


class WindowClosed(KeyboardInterrupt):
    """q or Esc in the display window: ends the stream cleanly, like Ctrl-C, but it is the
    user's way to end it, so the command exits 0."""

    reason = "q in the display window"
    exit_code = 0


def display_problem(build_info: str | None = None) -> str | None:
    """Why no window can open here, or None. Checked before the first frame: OpenCV with
    no screen either fails deep inside ``imshow`` or aborts the whole process."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return "there is no screen (DISPLAY is not set)"
    info = cv2.getBuildInformation() if build_info is None else build_info
    gui = re.search(r"^\s*GUI:\s*(\S+)", info, re.MULTILINE)
    if gui is not None and gui.group(1).upper() == "NONE":
        return "this OpenCV has no GUI support (opencv-python-headless)"
    return None


def require_display(what: str) -> None:
    """A one-line AdedgeError naming why ``what`` cannot be shown and suggesting --headless."""
    problem = display_problem()
    if problem is not None:
        raise AdedgeError(f"cannot open {what}: {problem}", HEADLESS_HINT)


class DisplaySink:
    """Shows every annotated frame in an OpenCV window named after ``display://N``.

    OpenCV cannot pick a monitor: the number only names the window. Pressing q or Esc in
    the window ends the stream like Ctrl-C (sinks closed, summary printed).
    """

    def __init__(self, number: int = 0, threshold: float | None = None) -> None:
        self.uri = f"display://{number}"
        require_display(self.uri)
        self.window = f"adedge {self.uri}"
        self.threshold = threshold
        self.heat = HeatmapScale()
        self.frames = 0
        self.closed = False
        try:
            cv2.namedWindow(self.window, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "OpenCV error"
            raise AdedgeError(f"cannot open {self.uri}: {reason}", HEADLESS_HINT) from None

    def write(self, frame: Frame, result: FrameScore) -> None:
        cv2.imshow(
            self.window, annotate(frame.image, frame.index, result, self.threshold, self.heat)
        )
        self.frames += 1
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            raise WindowClosed()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            cv2.destroyWindow(self.window)
            cv2.waitKey(1)
        except cv2.error:
            pass  # the user closed the window already
