"""Signals during a stream: SIGTERM ends it exactly like Ctrl-C, and neither may interrupt
the cleanup that follows.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from adedge.errors import Terminated


def on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_interrupts(enabled: bool) -> Iterator[None]:
    if not (enabled and on_main_thread()):
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    if not on_main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
