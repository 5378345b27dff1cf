"""The stream: frames from a source, scored in micro-batches, written to the sinks.

The pipeline (``pipeline``: :func:`run_stream`) joins an input stage (``inputs``), the
scoring in the main thread and an output stage (``sink_stage``); ``summary`` says what a
stream did, ``signals`` keeps Ctrl-C and SIGTERM orderly. The names a caller uses are
importable from here.
"""

from __future__ import annotations

from adedge.runtime.alarms import AlarmFilter
from adedge.runtime.stream.pipeline import StreamOptions, run_stream, started_event
from adedge.runtime.stream.summary import PERCENTILES, STAGE_ORDER, StreamSummary

__all__ = [
    "PERCENTILES",
    "STAGE_ORDER",
    "AlarmFilter",
    "StreamOptions",
    "StreamSummary",
    "run_stream",
    "started_event",
]
