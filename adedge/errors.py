"""User-facing errors: one line that names the problem and the fix.

The CLI prints ``error: <what>. <fix>`` and exits non-zero for any :class:`AdedgeError`;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AdedgeError(Exception):
    """A mistake the user can fix; ``hint`` says how."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message.rstrip(".")
        self.hint = hint

    def one_line(self) -> str:
        text = self.message + "."
        if self.hint:
            text += " " + self.hint.rstrip(".") + "."
        return " ".join(text.split())


class DataError(AdedgeError):
    """A data set that cannot be read or does not fit the method."""


class BundleError(AdedgeError):
    """A model bundle with a missing file or an invalid card."""


class CheckpointError(AdedgeError):
    """A checkpoint that is missing, corrupt or of another method."""


class SourceError(AdedgeError):
    """A stream source that cannot be opened."""


class ExportError(AdedgeError):
    """An export that failed its checks (e.g. the parity check)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C: the command stops cleanly (files closed, nothing half-written) and exits 130,
    so ``adedge export ... && deploy`` does not deploy after an aborted export."""

    exit_code = 130
    reason = "Ctrl-C (SIGINT)"


class Terminated(Interrupted):
    """SIGTERM (systemd stop, ``kill``, a container runtime): like Ctrl-C, exit 143."""

    exit_code = 143
    reason = "SIGTERM"


def interrupt_exit_code(exc: BaseException) -> int:
    """The exit code of an interrupted command: 143 for SIGTERM, 130 for Ctrl-C."""
    return int(getattr(exc, "exit_code", Interrupted.exit_code))
