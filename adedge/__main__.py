"""``adedge`` and ``python -m adedge``: the command line as a process, with Ctrl-C handled
from the first instant (importing the CLI's libraries takes a noticeable moment, and a
Ctrl-C in it must exit 130 with one line, not print a traceback).

An interrupted command leaves through ``os._exit`` once its output is flushed: CPython kills
itself with SIGINT at exit (status -2, not 130) when a KeyboardInterrupt ever escaped code run
by ``PyRun_String``, which some extension modules use while they import, even though adedge
caught it. Every file was closed by the command's own cleanup before this point.
"""

from __future__ import annotations

import contextlib
import os
import sys

INTERRUPTED = (130, 143)  # Ctrl-C, SIGTERM


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main() -> None:
    try:
        from adedge.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        _exit_now(130)
    try:
        cli_main()
    except SystemExit as stop:
        if stop.code in INTERRUPTED:
            _exit_now(int(stop.code))
        raise
    except KeyboardInterrupt:  # one that arrived after the CLI's own handlers
        sys.stderr.write("interrupted\n")
        _exit_now(130)


if __name__ == "__main__":
    main()
