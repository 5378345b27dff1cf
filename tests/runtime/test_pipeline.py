"""The stream as a pipeline: bounded queues and back-pressure (a slow sink slows the reader
instead of filling memory), interrupts that keep every result already written, failures raised
in the main thread, live-source gaps, and frames of unexpected dtype or channels. Real
components: the tiny ONNX mean bundle, real videos."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from jsonl_records import frame_records

from adedge.errors import SourceError
from adedge.runtime.detector import FrameScore
from adedge.runtime.sinks import JsonlSink, VideoSink
from adedge.runtime.sources import Frame, FrameSource, LiveSource, conform_image, open_source
from adedge.runtime.stream import StreamOptions, run_stream

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


def assert_accounted(summary) -> None:
    assert (
        summary.frames_scored + summary.frames_skipped + summary.frames_unscored
        == summary.frames_read
    )


class CountingSource(FrameSource):
    """Frames of ``inner``, counting how many have left the source (from the reader thread)."""

    def __init__(self, inner: FrameSource, fail_after: int | None = None, error=None) -> None:
        super().__init__("counting")
        self.inner, self.fail_after, self.error = inner, fail_after, error
        self.yielded = 0

    def _frames(self) -> Iterator[Frame]:
        for frame in self.inner:
            if self.fail_after is not None and self.yielded == self.fail_after:
                raise self.error
            self.yielded += 1
            yield frame

    def close(self) -> None:
        super().close()
        self.inner.close()


class SlowSink:
    """A sink that takes ``delay`` seconds per frame and notes how far the reader ran ahead."""

    def __init__(self, delay: float, source: CountingSource | None = None) -> None:
        self.delay, self.source = delay, source
        self.indices: list[int] = []
        self.ahead: list[int] = []
        self.closed = False

    def write(self, frame: Frame, result: FrameScore) -> None:
        if self.source is not None:
            self.ahead.append(self.source.yielded - (len(self.indices) + 1))
        self.indices.append(frame.index)
        time.sleep(self.delay)

    def close(self) -> None:
        self.closed = True


# --- back-pressure ---------------------------------------------------------------------------


def test_a_slow_sink_throttles_the_reader_and_every_frame_arrives_in_order(
    tmp_path, detector, digit_frames, make_video
):
    frames = [digit_frames[i % len(digit_frames)] for i in range(120)]
    video = make_video(tmp_path / "long.avi", frames, 25.0)
    source = CountingSource(open_source(str(video)))
    slow = SlowSink(0.004, source)
    events = tmp_path / "events.jsonl"
    queue_size, batch = 4, 3
    summary = run_stream(
        detector,
        source,
        [JsonlSink(events), slow],
        StreamOptions(batch=batch, queue_size=queue_size),
    )
    assert slow.indices == list(range(120)) and slow.closed
    assert [r["frame"] for r in frame_records(events)] == list(range(120))
    # read ahead of the sink at most: reader queue + the reader's frame in hand + a batch
    # being scored + the sink queue
    bound = 2 * queue_size + batch + 1
    assert max(slow.ahead) <= bound, (max(slow.ahead), bound)
    assert max(slow.ahead) >= queue_size  # the reader did run ahead: the stages overlap
    assert summary.frames_read == summary.frames_scored == 120
    assert summary.frames_discarded == 0 and summary.frames_unscored == 0
    assert summary.latency_ms["sink_ms"]["p50"] >= 4.0  # measured in the sink thread
    assert not summary.interrupted and summary.stopped_by == "end of source"


# --- interrupts ------------------------------------------------------------------------------


def test_keyboard_interrupt_from_the_source_drains_what_was_scored(
    tmp_path, detector, digit_folder
):
    """The interrupt comes in order after frame 9: batches 0-3 and 4-7 were scored and are all
    written though the sink is slow; frames 8 and 9 were read into an unfinished batch."""
    source = CountingSource(open_source(str(digit_folder)), 10, KeyboardInterrupt())
    slow = SlowSink(0.03)
    events = tmp_path / "events.jsonl"
    summary = run_stream(
        detector, source, [slow, JsonlSink(events)], StreamOptions(batch=4, queue_size=8)
    )
    assert summary.interrupted and summary.stopped_by == "Ctrl-C (SIGINT)"
    assert [r["frame"] for r in frame_records(events)] == list(range(8)) == slow.indices
    assert summary.frames_scored == 8 and summary.frames_unscored == 2
    assert summary.frames_read == 10
    assert_accounted(summary)
    assert source.closed and source.inner.closed and slow.closed
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("drain", [False, True])
def test_real_sigint_keeps_every_written_result(tmp_path, detector, digit_folder, drain):
    """SIGINT from a timer thread while a slow sink lags behind the model."""
    slow = SlowSink(0.05)
    events = tmp_path / "events.jsonl"
    at_signal: list[int] = []

    def press_ctrl_c() -> None:
        at_signal.append(len(slow.indices))
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(0.6, press_ctrl_c)
    timer.start()
    try:
        summary = run_stream(
            detector,
            open_source(str(digit_folder), loop=True),  # endless: only the signal ends it
            [JsonlSink(events), slow],
            StreamOptions(batch=4, queue_size=8, drain_on_interrupt=drain),
        )
    finally:
        timer.cancel()
    records = frame_records(events)
    assert summary.interrupted and summary.stopped_by == "Ctrl-C (SIGINT)"
    assert [r["frame"] for r in records] == list(range(len(records))) == slow.indices
    assert len(records) == summary.frames_scored >= at_signal[0] > 0
    assert_accounted(summary)
    if drain:  # the model was ahead of the slow sink: the queued results were written too
        assert len(records) >= at_signal[0] + 2
        assert summary.frames_unscored <= 4
    else:  # the sinks stop after the frame in hand; the rest is counted, not written
        assert len(records) <= at_signal[0] + 1
        assert summary.frames_discarded > 0 and summary.frames_unscored == 0
    assert "in flight" in summary.render() or summary.frames_discarded == 0
    assert slow.closed and leftovers(tmp_path) == []


# --- failures in other threads ---------------------------------------------------------------


def test_an_exception_in_a_sink_is_raised_after_the_files_are_closed(
    tmp_path, detector, digit_folder
):
    class Broken:
        raised: BaseException | None = None
        closed = False

        def write(self, frame: Frame, result: FrameScore) -> None:
            if frame.index == 5:
                self.raised = OSError("disk full")
                raise self.raised

        def close(self) -> None:
            self.closed = True

    broken = Broken()
    source = open_source(str(digit_folder), loop=True)
    events, video = tmp_path / "events.jsonl", tmp_path / "annotated.avi"
    with pytest.raises(OSError, match="disk full") as info:
        run_stream(
            detector,
            source,
            [JsonlSink(events), VideoSink(video, fps=10), broken],
            StreamOptions(batch=2),
        )
    assert info.value is broken.raised  # the same exception, raised in the main thread
    assert [r["frame"] for r in frame_records(events)] == list(range(6))
    cap = cv2.VideoCapture(str(video))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == 6  # the video was finished and renamed into place: playable
    assert broken.closed and source.closed and leftovers(tmp_path) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("adedge-")]


def test_an_exception_in_the_reader_is_raised_after_the_scored_frames_are_written(
    tmp_path, detector, digit_folder
):
    error = ValueError("bad block on disk")
    source = CountingSource(open_source(str(digit_folder)), 7, error)
    events = tmp_path / "events.jsonl"
    with pytest.raises(ValueError) as info:
        run_stream(detector, source, [JsonlSink(events)], StreamOptions(batch=3))
    assert info.value is error
    assert [r["frame"] for r in frame_records(events)] == list(range(6))  # two full batches
    assert source.closed and leftovers(tmp_path) == []


# --- live-source gaps ------------------------------------------------------------------------


def test_a_live_source_records_the_gap_while_it_reopens(tmp_path, detector, digit_video):
    """A video stands in for a camera: at its end the read fails, the first reopen gives a
    dead capture, the second the video again (recovered), then only dead captures (ended)."""
    missing = str(tmp_path / "unplugged.avi")
    captures = iter([digit_video, missing, digit_video])
    opened: list[str] = []

    def open_capture() -> cv2.VideoCapture:
        path = str(next(captures, missing))
        opened.append(path)
        return cv2.VideoCapture(path)

    source = LiveSource(
        "flaky-camera", open_capture, fail=SourceError("x"), max_reopen=2, backoff=0.02
    )
    started = time.time()
    summary = run_stream(detector, source, [], StreamOptions())
    assert opened[:3] == [str(digit_video), missing, str(digit_video)]
    first, last = source.gaps
    assert first.recovered and first.reopens == 2
    assert first.seconds >= 0.02 + 0.04 - 0.005  # two back-offs: 0.02 s, then 0.04 s
    assert started <= first.start <= last.start <= time.time()
    assert not last.recovered and last.reopens == 2
    assert summary.gaps == 2
    assert summary.gap_seconds == pytest.approx(first.seconds + last.seconds)
    assert "gaps     2 without frames" in summary.render()
    assert summary.frames_scored + summary.frames_dropped == 48  # two passes of 24


# --- unexpected frames -----------------------------------------------------------------------


class OddFrames(FrameSource):
    """Frames whose images are what a custom source or driver might hand over."""

    def __init__(self, base: np.ndarray) -> None:
        super().__init__("odd frames")
        grey = cv2.cvtColor(base, cv2.COLOR_BGR2GRAY)
        self.images = [
            base,  # 0 fine
            base.astype(np.uint16) << 8,  # 1 uint16 -> same as frame 0
            cv2.cvtColor(base, cv2.COLOR_BGR2BGRA),  # 2 BGRA -> same as frame 0
            base.astype(np.float32) / 255.0,  # 3 float in [0, 1] -> same as frame 0
            base.astype(np.float32),  # 4 float outside [0, 1]: rejected
            base[:, :, :2],  # 5 two channels: rejected
            np.zeros((0, 0, 3), np.uint8),  # 6 empty: rejected
            grey[:, :, None],  # 7 (H, W, 1) -> grey
            base.astype(np.int32),  # 8 int32: rejected
            np.dstack([base, base]),  # 9 six channels: rejected
            cv2.cvtColor(base, cv2.COLOR_BGR2BGRA).astype(np.uint16) * 257,  # 10 two conversions
        ]

    def _frames(self) -> Iterator[Frame]:
        for index, image in enumerate(self.images):
            yield Frame(index, index / 10, image, f"odd{index}")


def test_odd_frames_are_converted_or_rejected_with_counted_reasons(
    tmp_path, detector, digit_frames
):
    source = OddFrames(digit_frames[3])
    events = tmp_path / "events.jsonl"
    summary = run_stream(
        detector,
        source,
        [JsonlSink(events), VideoSink(tmp_path / "v.avi", fps=5)],
        StreamOptions(batch=4),
    )
    records = {r["frame"]: r for r in frame_records(events)}
    assert sorted(records) == [0, 1, 2, 3, 7, 10]
    for index in (1, 2, 3, 10):  # converted back to the very same uint8 BGR image
        assert records[index]["score"] == pytest.approx(records[0]["score"], abs=1e-6)
    assert summary.frames_converted == {
        "uint16 to uint8": 2,
        "BGRA to BGR": 2,
        "float to uint8": 1,
        "1 channel to grey": 1,
    }
    assert summary.frames_rejected == {
        "float outside [0, 1]": 1,
        "2 channels": 1,
        "empty": 1,
        "dtype int32": 1,
        "6 channels": 1,
    }
    assert summary.frames_skipped == 5 and summary.frames_scored == 6
    assert summary.frames_read == 11
    assert_accounted(summary)
    text = summary.render()
    assert "rejected (skipped): 1 2 channels" in text and "2 BGRA to BGR" in text


def test_conform_image_directly():
    image, converted, rejected = conform_image(np.full((4, 4), 0.5, np.float64))
    assert rejected is None and converted == ("float to uint8",)
    assert image.dtype == np.uint8 and image.flags.c_contiguous and image[0, 0] == 128
    assert conform_image(np.full((4, 4), np.nan))[2] == "float outside [0, 1]"
    assert conform_image(None)[2] == "empty"
    assert conform_image(np.zeros((2, 2, 2, 3), np.uint8))[2] == "4 dimensions"
    ok = np.zeros((4, 4, 3), np.uint8)
    assert conform_image(ok)[0] is ok and conform_image(ok)[1] == ()
