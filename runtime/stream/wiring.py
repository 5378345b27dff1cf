"""A stream opened from one typed description: :class:`StreamConfig` says what to score and
where the results go; :func:`open_pipeline` checks all of it before the model loads, then
opens the sinks, the detector and the source in that order, so that nothing is written
when a later step fails, and returns a :class:`Pipeline` that :func:`run_stream` runs.

``adedge stream`` is a thin command line over it; a service opens one per camera. Nothing
here prints: what a person should read goes through the ``log`` callable.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from adedge.atomic import write_json
from adedge.bundle import check_threshold
from adedge.errors import AdedgeError
from adedge.formats import BackendChoice, parse_backend
from adedge.outputs import STDOUT, Existing, check_writable
from adedge.paths import resolve_model
from adedge.runtime.detector import Detector
from adedge.runtime.labelled_video import read_truth
from adedge.runtime.sinks import (
    ConsoleSink,
    DetectionTally,
    Log,
    ProgressSink,
    Sink,
    SinkKind,
    SinkSettings,
    SinkSpec,
    discard_sinks,
    open_sinks,
    parse_sinks,
    progress_wanted,
)
from adedge.runtime.sources import FrameSource, check_source_options, open_source
from adedge.runtime.stream.pipeline import StreamOptions, run_stream
from adedge.runtime.stream.summary import StreamSummary
from adedge.triton_address import is_triton

DEFAULT_VIDEO_FPS = 25.0  # of annotated video when --fps does not say


@dataclass(frozen=True)
class StreamConfig:
    """One stream: its source URI, the bundle (None: the newest under models/) and backend,
    the sinks (``--sink`` URIs, or SinkSpecs for the --jsonl/--save-video shortcuts), what
    to do with existing outputs, and how frames are read and scored."""

    source: str = "synthetic"
    model: Path | None = None
    backend: str = "onnxruntime"
    threshold: float | None = None  # None: the card's
    sinks: tuple[str | SinkSpec, ...] = ()
    existing: Existing = Existing.REFUSE
    segment_minutes: float | None = None  # None: .mp4 in 1-minute files, others one file
    resize: tuple[int, int] | None = None  # (width, height)
    batch: int = 1
    max_frames: int | None = None
    every: int = 1
    fps: float | None = None
    loop: bool = False
    quiet: bool = False
    headless: bool = False
    truth: Path | None = None  # ground-truth CSV (frame, anomalous)
    summary_json: Path | None = None
    threads: int = 0  # ONNX Runtime threads per stage; 0: every core
    alarm_frames: int = 1
    min_area: float | None = None  # pixels a heatmap region must exceed; None: the card's
    pixel: bool = True  # pixel decisions where the card has a pixel threshold


@dataclass(frozen=True)
class CheckedStream:
    """A StreamConfig whose every option passed, with what its checks read or parsed."""

    config: StreamConfig
    options: StreamOptions
    backend: BackendChoice
    threshold: float | None
    sinks: tuple[SinkSpec, ...]
    truth: dict[int, bool]
    segment_seconds: float | None

    @property
    def records_on_stdout(self) -> bool:
        """``--jsonl -``: the records alone go to stdout, everything else to stderr."""
        return any(s.kind is SinkKind.JSONL and s.target == STDOUT for s in self.sinks)


@dataclass
class Pipeline:
    """What :func:`run_stream` needs (``detector``, ``source``, ``sinks``, ``options``), and
    what the caller reports afterwards: the ``tally`` of decisions against known truth, and
    the ``outputs`` opened from the config (files and windows)."""

    checked: CheckedStream
    model: Path | None  # None: a Triton model without a local fallback
    detector: Detector
    source: FrameSource
    sinks: list[Sink]
    outputs: list[Sink]
    tally: DetectionTally
    log: Log = field(repr=False)

    @property
    def options(self) -> StreamOptions:
        return self.checked.options

    @property
    def records_on_stdout(self) -> bool:
        return self.checked.records_on_stdout

    def run(self) -> StreamSummary:
        """Score until the source ends, the user stops it or a sink asks to: every sink and
        the source are closed on return."""
        try:
            return run_stream(self.detector, self.source, self.sinks, self.options)
        finally:
            self.detector.close()

    def written(self) -> list[Path]:
        """The files the outputs wrote (video segments each), that exist."""
        paths = []
        for output in self.outputs:
            for path in getattr(output, "written", [getattr(output, "path", None)]):
                if path is not None and str(path) != STDOUT and Path(path).exists():
                    paths.append(Path(path))
        return paths

    def finish(self, summary: StreamSummary) -> None:
        """After :meth:`run`: say which files were written, and write the summary JSON
        (a whole file, renamed into place) where the config asks for one."""
        for path in self.written():
            self.log(f"wrote {path}")
        target = self.checked.config.summary_json
        if target is not None:
            write_json(target, {**summary.to_dict(), "detection": self.tally.summary()})

    def close(self) -> None:
        """Give up a pipeline that was never run: nothing was written, the source closes."""
        discard_sinks(self.outputs)
        self.source.close()
        self.detector.close()


def check_threads(threads: int) -> int:
    if threads < 0:
        raise AdedgeError(f"--threads {threads} is negative", "pass 0 (every core) or more")
    return threads


def check_stream(config: StreamConfig) -> CheckedStream:
    """Every option of ``config`` checked, in one place and before any model or source is
    opened: numbers in range, the backend known, the outputs writable (and not holding an
    earlier run unless ``existing`` says what to do), the truth CSV readable. Each failure
    is one line naming the option."""
    # Ctrl-C/SIGTERM still write every result already scored: nothing produced is lost
    options = StreamOptions(
        batch=config.batch, alarm_frames=config.alarm_frames, drain_on_interrupt=True
    )
    threshold = (
        None if config.threshold is None else check_threshold(config.threshold, "--threshold")
    )
    check_threads(config.threads)
    backend = parse_backend(config.backend)
    minutes = config.segment_minutes
    if minutes is not None and not (math.isfinite(minutes) and minutes > 0):
        raise AdedgeError(f"--segment-minutes {minutes} is not a positive number", "e.g. 10")
    check_source_options(config.every, config.max_frames, config.fps, config.resize)
    if config.summary_json is not None:
        target = check_writable(config.summary_json, "--summary-json")
        if target.exists() and config.existing is Existing.REFUSE:
            raise AdedgeError(
                f"--summary-json '{config.summary_json}' already exists",
                "pass --overwrite to replace it, or choose another name",
            )
    truth = {}
    if config.truth is not None:
        truth = {index: bool(label) for index, label in read_truth(config.truth).items()}
    return CheckedStream(
        config,
        options,
        backend,
        threshold,
        tuple(parse_sinks(config.sinks)),
        truth,
        None if minutes is None else 60.0 * minutes,
    )


def open_pipeline(config: StreamConfig, log: Log) -> Pipeline:
    """Check ``config``, then open its sinks (checked, nothing written until the first
    record), the detector and the source with its known truth. Anything that fails leaves
    every existing output as it was."""
    checked = check_stream(config)
    settings = SinkSettings(
        fps=config.fps or DEFAULT_VIDEO_FPS,
        existing=config.existing,
        segment_seconds=checked.segment_seconds,
        log=log,
    )
    outputs = open_sinks(checked.sinks, settings, headless=config.headless)
    detector: Detector | None = None
    try:
        # with a Triton model --model is optional: the card comes from the server, and a
        # bundle given is the local fallback while the server is unreachable
        triton = is_triton(config.backend)
        model = config.model if triton else resolve_model(config.model, log)
        detector = Detector(
            model,
            backend=config.backend,
            threshold=checked.threshold,
            threads=config.threads,
            min_area=config.min_area,
            pixel=config.pixel,
        )
        detector.card.warn_if_unknown_method(log)
        if detector.pixel is not None:
            log(detector.pixel.describe())
        source = open_source(
            config.source,
            loop=config.loop,
            max_frames=config.max_frames,
            every=config.every,
            fps=config.fps,
            resize=config.resize,
            truth=checked.truth,
        )
    except BaseException:
        discard_sinks(outputs)
        if detector is not None:
            detector.close()
        raise
    tally = DetectionTally()
    console = sys.stderr if checked.records_on_stdout else sys.stdout
    sinks: list[Sink] = [ConsoleSink(quiet=config.quiet, stream=console), tally, *outputs]
    if progress_wanted(source) and not checked.records_on_stdout:
        sinks.append(ProgressSink(source.expected_frames()))
    fallback = f", local fallback {model}" if triton and model is not None else ""
    log(
        f"streaming {source.describe()} through {detector.bundle.path} "
        f"({detector.card.method}, {checked.backend}{fallback})"
    )
    return Pipeline(checked, model, detector, source, sinks, outputs, tally, log)
