"""Sinks and the stream loop on real frames with a real (tiny) ONNX bundle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from jsonl_records import frame_records

from adedge.errors import AdedgeError, SourceError
from adedge.outputs import Existing
from adedge.runtime.detector import FrameScore
from adedge.runtime.sinks import ConsoleSink, JsonlSink, VideoSink
from adedge.runtime.sources import Frame, FrameSource, LiveSource, open_source
from adedge.runtime.stream import StreamOptions, StreamSummary, run_stream

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed


def expected_mean_score(bgr: np.ndarray) -> float:
    """The mean model's score computed by hand: grey, area-resize to 32, (x/255-0.5)/0.5."""
    grey = cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
    return float(((small / 255.0 - 0.5) / 0.5).mean())


def count_video_frames(path: Path) -> tuple[int, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    count, size = 0, (0, 0)
    while True:
        ok, image = cap.read()
        if not ok:
            break
        count, size = count + 1, image.shape[:2]
    cap.release()
    return count, size


def leftovers(folder: Path) -> list[str]:
    """Temporary files a sink left behind (there must be none after close)."""
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


class InterruptingSink:
    """A real sink that presses Ctrl-C (raises or signals) on its ``after``-th frame."""

    def __init__(self, after: int, how: str = "raise") -> None:
        self.after, self.how, self.count, self.closed = after, how, 0, False

    def write(self, frame: Frame, result: FrameScore) -> None:
        self.count += 1
        if self.count < self.after:
            return
        if self.how == "raise":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGINT if self.how == "sigint" else signal.SIGTERM)
        time.sleep(1.0)  # the handler raises long before this ends

    def close(self) -> None:
        self.closed = True


class InterruptedSource(FrameSource):
    """A folder source whose reading is interrupted (KeyboardInterrupt) after ``after`` frames."""

    def __init__(self, inner: FrameSource, after: int) -> None:
        super().__init__("interrupted")
        self.inner, self.after = inner, after

    def _frames(self) -> Iterator[Frame]:
        for count, frame in enumerate(self.inner):
            if count == self.after:
                raise KeyboardInterrupt
            yield frame

    def close(self) -> None:
        super().close()
        self.inner.close()


# --- sinks ---------------------------------------------------------------------------------


def test_jsonl_records_are_visible_under_the_real_name_while_writing(tmp_path, digit_frames):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, threshold=0.25)
    assert not path.exists()  # opened by the first record: a stream that never ran writes none
    for i in range(3):
        frame = Frame(i, i / 10, digit_frames[i], f"f{i}", truth=i == 1, wall=1.7e9 + i)
        sink.write(frame, FrameScore(0.1 * i, i == 2, {"infer_ms": 1.5}))
        assert len(frame_records(path)) == i + 1  # flushed line by line, visible to tail -f
    sink.close()
    sink.close()  # idempotent
    records = frame_records(path)
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert records[2] == {
        "type": "frame",
        "frame": 2,
        "time": "2023-11-14T22:13:22.000+00:00",
        "source_time": 0.2,
        "name": "f2",
        "score": pytest.approx(0.2),
        "anomalous": True,
        "threshold": 0.25,
        "latency_ms": {"infer_ms": 1.5},
        "truth": False,
    }
    assert leftovers(tmp_path) == []


def test_jsonl_refuses_an_earlier_run_unless_told_to_overwrite_or_append(tmp_path, digit_frames):
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "frame", "frame": 99}\n', encoding="utf-8")
    with pytest.raises(AdedgeError) as info:
        JsonlSink(path)
    line = info.value.one_line()
    assert "already exists" in line and "--overwrite" in line and "--append" in line
    appended = JsonlSink(path, existing=Existing.APPEND)
    appended.write(Frame(0, 0.0, digit_frames[0], "f"), FrameScore(0.5, False))
    appended.close()
    assert [r["frame"] for r in frame_records(path)] == [99, 0]
    replaced = JsonlSink(path, existing=Existing.OVERWRITE)
    assert [r["frame"] for r in frame_records(path)] == [99, 0]  # untouched until a record
    replaced.write(Frame(1, 0.0, digit_frames[0], "f"), FrameScore(0.5, False))
    replaced.close()
    assert [r["frame"] for r in frame_records(path)] == [1]


def test_append_after_a_cut_line_starts_on_a_new_line(tmp_path, digit_frames):
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "frame", "frame": 0}\n{"type": "fra', encoding="utf-8")  # cut
    with JsonlSink(path, existing=Existing.APPEND) as sink:
        sink.write(Frame(1, 0.0, digit_frames[0], "f"), FrameScore(0.5, False))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[1] == '{"type": "fra' and json.loads(lines[2])["frame"] == 1


def test_jsonl_recovers_the_hidden_file_an_old_version_left_behind(tmp_path, capsys):
    """adedge 0.1 wrote to .events.jsonl.<random>.partial.jsonl and renamed at the end: a
    kill left that hidden file, the only copy of its records."""
    stale = tmp_path / ".events.jsonl.ab12cd34.partial.jsonl"
    stale.write_text('{"frame": 0}\n', encoding="utf-8")
    empty = tmp_path / ".events.jsonl.zz99yy88.partial.jsonl"
    empty.touch()
    logged: list[str] = []
    JsonlSink(tmp_path / "events.jsonl", log=logged.append).close()
    recovered = sorted(p.name for p in tmp_path.iterdir())
    assert len(recovered) == 1 and recovered[0].startswith("events.recovered-")
    assert (tmp_path / recovered[0]).read_text(encoding="utf-8") == '{"frame": 0}\n'
    assert any(recovered[0] in line for line in logged) and len(logged) == 2


def test_jsonl_to_stdout(capsys, digit_frames):
    sink = JsonlSink("-")
    sink.write(Frame(0, 0.0, digit_frames[0], "f"), FrameScore(0.5, True))
    sink.close()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and json.loads(out[0])["anomalous"] is True


def test_jsonl_sink_writes_null_for_a_nan_score(tmp_path, digit_frames):
    with JsonlSink(tmp_path / "e.jsonl") as sink:
        sink.write(Frame(0, 0.0, digit_frames[0], "f"), FrameScore(float("nan"), False))
    assert frame_records(tmp_path / "e.jsonl")[0]["score"] is None


@pytest.mark.parametrize("suffix", [".avi", ".mkv"])
def test_video_sink_writes_under_the_real_name_every_frame(tmp_path, digit_frames, suffix):
    path = tmp_path / f"out{suffix}"
    sink = VideoSink(path, fps=10)
    assert not path.exists()  # nothing until the first frame
    for i, image in enumerate(digit_frames[:9]):
        sink.write(Frame(i, i / 10, image, "f"), FrameScore(float(i), i % 3 == 0))
    assert path.exists()  # written in place: a container that plays when cut
    sink.close()
    count, (height, width) = count_video_frames(path)
    assert count == 9 and sink.written == [path]
    assert min(height, width) >= 192  # 64x64 digits are enlarged so the text is legible
    assert leftovers(tmp_path) == []


def test_mp4_is_written_in_closed_segments(tmp_path, digit_frames):
    """An .mp4's index is written on close: segments keep all but the last one playable."""
    path = tmp_path / "out.mp4"
    logged: list[str] = []
    sink = VideoSink(path, fps=10, segment_seconds=0.4, log=logged.append)
    for i, image in enumerate(digit_frames[:10]):
        sink.write(Frame(i, i / 10, image, "f"), FrameScore(float(i), False))
    assert count_video_frames(tmp_path / "out-000.mp4")[0] == 4  # closed: plays already
    sink.close()
    assert [p.name for p in sink.written] == ["out-000.mp4", "out-001.mp4", "out-002.mp4"]
    assert [count_video_frames(p)[0] for p in sink.written] == [4, 4, 2]
    assert not path.exists() and logged == []
    VideoSink(tmp_path / "default.mp4", fps=10, log=logged.append).close()
    assert "segments default-000.mp4" in logged[0]  # .mp4 is split even when not asked


def test_video_refuses_an_earlier_run_unless_told_to_overwrite(tmp_path, digit_frames):
    path = tmp_path / "out.avi"
    with VideoSink(path, fps=10) as sink:
        sink.write(Frame(0, 0.0, digit_frames[0], "f"), FrameScore(0.5, False))
    for existing in (Existing.REFUSE, Existing.APPEND):
        with pytest.raises(AdedgeError, match="already exists"):
            VideoSink(path, fps=10, existing=existing)
    with VideoSink(path, fps=10, existing=Existing.OVERWRITE) as sink:
        for i in range(3):
            sink.write(Frame(i, 0.0, digit_frames[i], "f"), FrameScore(0.5, False))
    assert count_video_frames(path)[0] == 3
    segmented = tmp_path / "seg.mp4"
    with VideoSink(segmented, fps=10, segment_seconds=0.1) as sink:
        sink.write(Frame(0, 0.0, digit_frames[0], "f"), FrameScore(0.5, False))
    with pytest.raises(AdedgeError, match="segments of an earlier run"):
        VideoSink(segmented, fps=10, segment_seconds=0.1)


def test_video_sink_border_is_red_for_anomalies_and_green_otherwise(tmp_path, digit_frames):
    path = tmp_path / "labels.mkv"  # FFV1 is lossless: colours read back exactly
    with VideoSink(path, fps=5, threshold=0.5) as sink:
        sink.write(Frame(0, 0.0, digit_frames[0], "a"), FrameScore(0.1, False))
        sink.write(Frame(1, 0.2, digit_frames[1], "b"), FrameScore(0.9, True))
    cap = cv2.VideoCapture(str(path))
    corners = []
    for _ in range(2):
        ok, image = cap.read()
        assert ok
        corners.append(tuple(int(v) for v in image[image.shape[0] - 1, 0]))  # B, G, R
    cap.release()
    assert corners[0][1] > 150 and corners[0][2] < 50  # green
    assert corners[1][2] > 200 and corners[1][1] < 50  # red


def test_video_sink_rejects_an_unknown_suffix_and_writes_nothing_without_frames(tmp_path):
    with pytest.raises(AdedgeError) as info:
        VideoSink(tmp_path / "out.mov", fps=10)
    assert ".avi" in info.value.one_line() and "\n" not in info.value.one_line()
    sink = VideoSink(tmp_path / "empty.avi", fps=10)
    sink.close()
    assert list(tmp_path.iterdir()) == [] and sink.frames == 0 and sink.written == []


def test_console_sink_prints_one_line_per_frame(capsys, digit_frames):
    sink = ConsoleSink()
    quiet = ConsoleSink(quiet=True)
    for i in range(4):
        frame = Frame(i, 0.0, digit_frames[i], f"img{i}.png")
        result = FrameScore(0.5 * i, i == 3)
        sink.write(frame, result)
        quiet.write(frame, result)
    sink.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5  # 4 frames, then the anomaly again from the quiet sink
    assert "NORMAL" in lines[0] and "img0.png" in lines[0]
    assert "ANOMALY" in lines[3] and "1.5000" in lines[3] and lines[4] == lines[3]


# --- the stream ----------------------------------------------------------------------------


def test_stream_folder_scores_every_frame_into_every_sink(
    tmp_path, detector, digit_folder, digit_frames, capsys
):
    events, video = tmp_path / "out" / "events.jsonl", tmp_path / "out" / "annotated.avi"
    sinks = [JsonlSink(events), VideoSink(video, fps=10), ConsoleSink()]
    summary = run_stream(detector, open_source(str(digit_folder)), sinks, StreamOptions(batch=5))
    records = frame_records(events)
    assert [r["frame"] for r in records] == list(range(24))
    assert [r["name"] for r in records] == [str(p) for p in sorted(digit_folder.glob("*.png"))]
    # batches of 5 (the last of 4) map every score back to its own frame
    expected = [expected_mean_score(f) for f in digit_frames]
    np.testing.assert_allclose([r["score"] for r in records], expected, atol=1e-5)
    assert all(r["threshold"] == detector.threshold for r in records)
    assert set(records[0]["latency_ms"]) >= {"read_ms", "preprocess_ms", "infer_ms"}
    assert count_video_frames(video)[0] == 24
    assert len(capsys.readouterr().out.splitlines()) == 24
    assert summary.frames_scored == summary.frames_read == 24 and not summary.interrupted
    assert summary.stopped_by == "end of source"
    assert summary.anomalies == sum(s > detector.threshold for s in expected)
    assert leftovers(events.parent) == []


def test_summary_counts_add_up_with_a_corrupt_image(tmp_path, detector, digit_folder):
    (digit_folder / "frame_007x.png").write_bytes(b"garbage")
    summary = run_stream(detector, open_source(str(digit_folder)), [], StreamOptions(batch=4))
    assert summary.frames_skipped == 1 and summary.frames_scored == 24
    assert summary.frames_scored + summary.frames_skipped == summary.frames_read == 25
    assert summary.frames_dropped == 0 and summary.frames_unscored == 0
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["frames_read"] == 25 and data["batch"] == 4
    assert list(summary.latency_ms) == [
        "read_ms",
        "preprocess_ms",
        "infer_ms",
        "sink_ms",
        "total_ms",
    ]
    for values in summary.latency_ms.values():
        assert 0.0 <= values["p50"] <= values["p95"]
    text = summary.render()
    assert "25 read, 24 scored, 1 skipped" in text and "p95" in text and "infer" in text


def test_stream_video_source_and_max_frames(tmp_path, detector, digit_video):
    events = tmp_path / "events.jsonl"
    summary = run_stream(
        detector,
        open_source(str(digit_video), every=2),
        [JsonlSink(events)],
        StreamOptions(batch=3, max_frames=5),
    )
    assert [r["frame"] for r in frame_records(events)] == [0, 2, 4, 6, 8]
    np.testing.assert_allclose(
        [r["source_time"] for r in frame_records(events)], [0, 0.2, 0.4, 0.6, 0.8], atol=1e-3
    )
    assert summary.frames_scored == 5 and summary.stopped_by == "max_frames"


def test_synthetic_stream_scores_differ_on_defect_frames(tmp_path, detector):
    events = tmp_path / "events.jsonl"
    source = open_source("synthetic:seed=3,size=128,frames=46")
    summary = run_stream(detector, source, [JsonlSink(events)], StreamOptions(batch=8))
    records = frame_records(events)
    assert summary.frames_scored == len(records) == 46
    defects = [r for r in records if r["truth"]]
    normal = np.array([r["score"] for r in records if not r["truth"]])
    assert [r["frame"] for r in defects] == [5, 15, 25, 35, 45]
    centre, spread = np.median(normal), np.ptp(normal)
    for record in defects:  # every kind of defect moves the mean far beyond the sensor noise
        assert abs(record["score"] - centre) > 5 * spread, (record, centre, spread)


# --- ending the stream: Ctrl-C, SIGTERM, errors --------------------------------------------


@pytest.mark.parametrize("how", ["raise", "sigint", "sigterm"])
def test_interrupt_from_a_sink_leaves_complete_files(tmp_path, detector, digit_folder, how):
    events, video = tmp_path / "events.jsonl", tmp_path / "annotated.avi"
    before = signal.getsignal(signal.SIGTERM)
    stopper = InterruptingSink(after=8, how=how)
    summary = run_stream(
        detector,
        open_source(str(digit_folder), loop=True),  # endless: only the interrupt ends it
        [JsonlSink(events), VideoSink(video, fps=10), stopper],
        StreamOptions(batch=4),
    )
    assert summary.interrupted and stopper.closed
    assert summary.stopped_by == ("SIGTERM" if how == "sigterm" else "Ctrl-C (SIGINT)")
    records = frame_records(events)  # every line parses: none was cut
    assert [r["frame"] for r in records] == list(range(8))
    assert count_video_frames(video)[0] == 8
    assert summary.frames_scored == 8 and summary.frames_read == 8
    assert leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) == before  # the stream's handler is gone


def test_interrupt_while_reading_counts_the_unscored_frames(tmp_path, detector, digit_folder):
    events = tmp_path / "events.jsonl"
    source = InterruptedSource(open_source(str(digit_folder)), after=6)
    summary = run_stream(detector, source, [JsonlSink(events)], StreamOptions(batch=4))
    assert summary.interrupted and source.closed and source.inner.closed
    assert [r["frame"] for r in frame_records(events)] == [0, 1, 2, 3]  # the first batch
    assert summary.frames_read == 6 and summary.frames_scored == 4
    assert summary.frames_unscored == 2
    assert (
        summary.frames_scored + summary.frames_skipped + summary.frames_unscored
        == summary.frames_read
    )
    assert "not scored" in summary.render()


def test_an_error_in_a_sink_still_closes_the_others(tmp_path, detector, digit_folder):
    class Broken:
        def write(self, frame: Frame, result: FrameScore) -> None:
            if frame.index == 3:
                raise RuntimeError("disk full")

        def close(self) -> None:
            pass

    events = tmp_path / "events.jsonl"
    with pytest.raises(RuntimeError, match="disk full"):
        run_stream(detector, open_source(str(digit_folder)), [JsonlSink(events), Broken()])
    assert [r["frame"] for r in frame_records(events)] == [0, 1, 2, 3]
    assert leftovers(tmp_path) == []


STREAM_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["torch"] = None  # `import torch` raises: the stream must not need it
    from adedge.runtime.detector import Detector
    from adedge.runtime.sinks import JsonlSink
    from adedge.runtime.sources import open_source
    from adedge.runtime.stream import StreamOptions, run_stream

    bundle, events = sys.argv[1], sys.argv[2]
    source = open_source("synthetic:size=64", fps=200)
    summary = run_stream(Detector(bundle), source, [JsonlSink(events)], StreamOptions(batch=2))
    print(json.dumps(summary.to_dict()))
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_a_real_stream_process(tmp_path, mean_bundle, sig):
    """A separate process streams an endless scene until it is signalled, without torch."""
    events = tmp_path / "events.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-c", STREAM_SCRIPT, str(mean_bundle), str(events)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if events.exists() and len(frame_records(events)) >= 5:  # visible while running
                break
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()
        process.send_signal(sig)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] and "synthetic" in summary["source"]
    records = frame_records(events)
    assert len(records) == summary["frames_scored"] >= 5
    assert [r["frame"] for r in records] == list(range(len(records)))
    assert leftovers(tmp_path) == []


def test_summary_render_is_a_table():
    summary = StreamSummary(
        source="synthetic",
        backend="onnxruntime",
        threshold=0.5,
        batch=1,
        frames_read=3,
        frames_scored=3,
        latency_ms={"infer_ms": {"p50": 1.0, "p95": 2.0}},
    )
    lines = summary.render().splitlines()
    assert lines[0].startswith("source") and any(
        line.split()[:3] == ["infer", "1.000", "2.000"] for line in lines
    )


def test_live_source_stream_scores_one_frame_at_a_time(detector, digit_video):
    source = LiveSource(
        "video-as-camera",
        lambda: cv2.VideoCapture(str(digit_video)),
        fail=SourceError("cannot open"),
        max_reopen=0,
    )
    summary = run_stream(detector, source, [], StreamOptions(batch=8))
    assert summary.batch == 1  # a camera frame never waits for a batch to fill
    assert summary.frames_scored + summary.frames_dropped == 24
    assert summary.frames_read == summary.frames_scored and not summary.interrupted


def test_bad_stream_options_are_user_errors():
    with pytest.raises(AdedgeError):
        StreamOptions(batch=0)
    with pytest.raises(AdedgeError):
        StreamOptions(max_frames=-1)
