"""The stream's features on real frames: --alarm-frames, --resize, p99 latency, --sink URIs
(display errors, --headless), the heatmap overlay, the progress line and the synthetic
scene on scikit-image's real textures."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli
from jsonl_records import frame_records
from video_files import read_video

from adedge.errors import AdedgeError, SourceError
from adedge.outputs import Existing
from adedge.runtime.detector import Detector, FrameScore
from adedge.runtime.sinks import (
    DetectionTally,
    DisplaySink,
    HeatmapScale,
    JsonlSink,
    ProgressSink,
    SinkSettings,
    SinkSpec,
    VideoSink,
    annotate,
    display_problem,
    open_sinks,
    parse_sink,
    progress_wanted,
)
from adedge.runtime.sinks import display as display_module
from adedge.runtime.sources import Frame, open_source, parse_resize
from adedge.runtime.stream import AlarmFilter, StreamOptions, run_stream

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed

# --- helpers -------------------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


def runs_reference(labels: list[bool], k: int) -> tuple[list[bool], int]:
    """Alarm states and alarms raised, computed the slow obvious way (the test's oracle)."""
    states, raised = [], 0
    for i in range(len(labels)):
        run = 0
        while i - run >= 0 and labels[i - run]:
            run += 1
        states.append(run >= k)
        raised += run == k
    return states, raised


class Recorder:
    """A sink that keeps what it is given (to check what reaches the sinks)."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.results: list[FrameScore] = []
        self.closed = False

    def write(self, frame: Frame, result: FrameScore) -> None:
        self.shapes.append(frame.image.shape)
        self.results.append(result)

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def digit_images() -> list[np.ndarray]:
    """Real scikit-learn digits as grey uint8 64x64 (ink bright on black)."""
    from sklearn.datasets import load_digits

    return [
        cv2.resize((image * (255 / 16)).astype(np.uint8), (64, 64), interpolation=cv2.INTER_LINEAR)
        for image in load_digits().images[:40]
    ]


# Labels of the designed video: runs of anomalous (inverted, mostly white) frames of 1, 2, 3
# and 4 frames between normal digits.
PATTERN = [0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0]


@pytest.fixture(scope="module")
def pattern_video(tmp_path_factory, digit_images) -> Path:
    """Digits as a real MJPG video; frames where PATTERN is 1 are inverted (white paper, dark
    ink), which the mean model scores far above 0, the others far below."""
    path = tmp_path_factory.mktemp("pattern") / "pattern.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 64))
    assert writer.isOpened()
    for label, grey in zip(PATTERN, digit_images, strict=False):
        writer.write(cv2.cvtColor(255 - grey if label else grey, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


# --- 1. --alarm-frames ---------------------------------------------------------------------


def test_alarm_filter_needs_k_consecutive_anomalous_frames():
    labels = [bool(v) for v in PATTERN]
    for k in (1, 2, 3, 4, 5):
        alarm = AlarmFilter(k)
        states = [alarm.update(label) for label in labels]
        assert (states, alarm.raised) == runs_reference(labels, k), k
    with pytest.raises(AdedgeError):
        AlarmFilter(0)
    with pytest.raises(AdedgeError, match="alarm frames"):
        StreamOptions(alarm_frames=0)


def test_cli_alarm_frames_on_a_real_video(
    monkeypatch, capsys, tmp_path, mean_bundle, pattern_video
):
    events, summary = tmp_path / "events.jsonl", tmp_path / "summary.json"
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "stream",
        "--model",
        mean_bundle,
        "--source",
        pattern_video,
        "--threshold",
        0.0,
        "--alarm-frames",
        3,
        "--sink",
        events,
        "--summary-json",
        summary,
        "--batch",
        4,
    )
    assert code == 0, err
    records = frame_records(events)
    assert [int(r["anomalous"]) for r in records] == PATTERN  # the per-frame label is kept
    alarms = [i for i, r in enumerate(records) if r["alarm"]]
    assert alarms == [8, 12, 13]  # the 3rd frame of the run of 3, the 3rd and 4th of 4
    stats = json.loads(summary.read_text())
    assert stats["alarms"] == 2 and stats["anomalies"] == sum(PATTERN)
    assert stats["alarm_frames"] == 3
    alarm_lines = [line for line in out.splitlines() if "ALARM" in line]
    assert [int(line.split()[1]) for line in alarm_lines] == [8, 12, 13]
    assert "alarms   2 raised (3 consecutive anomalous frames)" in out


@pytest.mark.parametrize("k", [1, 2, 3])
def test_alarms_match_the_runs_of_a_real_video_at_its_median_score(detector, digit_video, k):
    scores = [r.score for r in _record(detector, str(digit_video)).results]
    detector = Detector(detector.bundle, threshold=float(np.median(scores)))
    recorder = _record(detector, str(digit_video), alarm_frames=k)
    labels = [bool(r.anomalous) for r in recorder.results]
    assert 0 < sum(labels) < len(labels)
    states, raised = runs_reference(labels, k)
    assert [r.alarm for r in recorder.results] == states
    assert recorder.summary.alarms == raised > 0


def _record(detector: Detector, spec: str, **options) -> Recorder:
    recorder = Recorder()
    summary = run_stream(detector, open_source(spec), [recorder], StreamOptions(**options))
    recorder.summary = summary  # type: ignore[attr-defined]
    return recorder


# --- 2. --resize ---------------------------------------------------------------------------


def test_resized_frames_reach_the_detector_and_every_sink(tmp_path, detector, digit_video):
    events = tmp_path / "events.jsonl"
    recorder = Recorder()
    source = open_source(str(digit_video), resize=(40, 30))
    run_stream(detector, source, [recorder, JsonlSink(events)], StreamOptions(batch=5))
    assert recorder.shapes == [(30, 40, 3)] * 24
    # the scores are those of the resized frames, not of the 64x64 originals
    raw = [f.image for f in open_source(str(digit_video))]
    resized = [cv2.resize(f, (40, 30), interpolation=cv2.INTER_AREA) for f in raw]
    np.testing.assert_allclose(
        [r["score"] for r in frame_records(events)],
        [s.score for s in detector.score_frames(resized)],
        atol=1e-6,
    )


def test_cli_resize_changes_the_saved_video_size(monkeypatch, capsys, tmp_path, mean_bundle):
    video = tmp_path / "out.mkv"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "stream",
        "--model",
        mean_bundle,
        "--source",
        "synthetic:size=64,frames=6",
        "--resize",
        "48x32",
        "--sink",
        f"file://{video}",
        "--quiet",
    )
    assert code == 0, err
    frames = read_video(video)
    # 48x32 is enlarged by ceil(192 / 32) = 6 for a legible annotation: 288x192, not 192x192
    assert len(frames) == 6 and frames[0].shape == (192, 288, 3)


@pytest.mark.parametrize("text", ["640", "640x", "x480", "0x10", "10by4", "-2x3"])
def test_bad_resize_is_a_one_line_error(monkeypatch, capsys, text, mean_bundle):
    with pytest.raises(SourceError, match="WIDTHxHEIGHT"):
        parse_resize(text)
    code, _, err = run_cli(monkeypatch, capsys, "stream", "--model", mean_bundle, "--resize", text)
    assert_one_line_error(code, err, "error: resize")


def test_parse_resize_accepts_spaces_and_capital_x():
    assert parse_resize("640x480") == (640, 480)
    assert parse_resize(" 32 X 16 ") == (32, 16)


# --- 3. p99 and the progress line ----------------------------------------------------------


def test_summary_has_p50_p95_p99_per_stage(detector, digit_folder):
    summary = run_stream(detector, open_source(str(digit_folder)), [], StreamOptions(batch=3))
    assert set(summary.latency_ms) >= {"read_ms", "preprocess_ms", "infer_ms", "total_ms"}
    for values in summary.latency_ms.values():
        assert list(values) == ["p50", "p95", "p99"]
        assert 0.0 <= values["p50"] <= values["p95"] <= values["p99"]
    header = next(line for line in summary.render().splitlines() if "latency" in line)
    assert header.split()[-3:] == ["p50", "p95", "p99"]
    assert json.loads(json.dumps(summary.to_dict()))["latency_ms"]["infer_ms"]["p99"] >= 0


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_for_sources_that_end(monkeypatch, digit_folder):
    monkeypatch.delenv("CI", raising=False)
    folder = open_source(str(digit_folder))
    assert progress_wanted(folder, [_Tty(), _Tty()])
    assert not progress_wanted(folder, [_Tty(), io.StringIO()])  # stdout piped to a file
    assert not progress_wanted(folder)  # pytest captures stdout and stderr
    monkeypatch.setenv("CI", "true")
    assert not progress_wanted(folder, [_Tty(), _Tty()])


def test_expected_frames_for_the_progress_total(digit_folder, digit_video):
    assert open_source(str(digit_folder)).expected_frames() == 24
    assert open_source(str(digit_folder), every=5).expected_frames() == 5
    assert open_source(str(digit_video), max_frames=7).expected_frames() == 7
    assert open_source(str(digit_video), loop=True).expected_frames() is None
    assert open_source("synthetic:frames=30", every=4).expected_frames() == 8
    assert open_source("synthetic").expected_frames() is None


def test_progress_sink_counts_frames_on_a_terminal(detector, digit_folder):
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    source = open_source(str(digit_folder))
    progress = ProgressSink(source.expected_frames(), console=console)
    run_stream(detector, source, [progress], StreamOptions(batch=4))
    text = out.getvalue()
    assert "24/24" in text and "anomalous" in text
    assert not progress.started  # stopped by the stream's close


def test_cli_prints_no_progress_when_not_on_a_terminal(monkeypatch, capsys, mean_bundle):
    monkeypatch.delenv("CI", raising=False)
    code, out, err = run_cli(
        monkeypatch, capsys, "stream", "--model", mean_bundle, "--max-frames", 5, "--quiet"
    )
    assert code == 0, err
    assert "━" not in out + err and "\x1b[" not in out + err


# --- 4. --sink URIs, display, heatmap ------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "kind", "target"),
    [
        ("out.jsonl", "jsonl", "out.jsonl"),
        ("runs/EVENTS.JSONL", "jsonl", "runs/EVENTS.JSONL"),
        ("jsonl://events.log", "jsonl", "events.log"),
        ("jsonl:///tmp/e.jsonl", "jsonl", "/tmp/e.jsonl"),
        ("file://out.mp4", "video", "out.mp4"),
        ("file:///data/my%20clip.avi", "video", "/data/my clip.avi"),
        ("clip.mkv", "video", "clip.mkv"),
        ("file://ev.jsonl", "jsonl", "ev.jsonl"),
        ("display://0", "display", "0"),
        ("display://1", "display", "1"),
        ("display://", "display", "0"),
    ],
)
def test_parse_sink_uris(uri, kind, target):
    assert parse_sink(uri) == SinkSpec(kind, target, uri)


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("rtp://192.168.1.2:5000", "not supported"),
        ("out.txt", "not a known file type"),
        ("file://out.mov", "not a known file type"),
        ("display://left", "display number"),
        ("jsonl://", "names no file"),
        ("  ", "empty"),
    ],
)
def test_bad_sink_uris_are_one_line_errors(uri, words):
    with pytest.raises(AdedgeError) as info:
        parse_sink(uri)
    line = info.value.one_line()
    assert words in line and "\n" not in line


def test_cli_sinks_write_jsonl_and_video(monkeypatch, capsys, tmp_path, mean_bundle, digit_video):
    events, video, legacy = tmp_path / "a.jsonl", tmp_path / "b.avi", tmp_path / "legacy.txt"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "stream",
        "--model",
        mean_bundle,
        "--source",
        digit_video,
        "--sink",
        f"jsonl://{events}",
        "--sink",
        f"file://{video}",
        "--jsonl",
        legacy,  # the shortcut keeps accepting any file name
        "--quiet",
    )
    assert code == 0, err
    assert len(frame_records(events)) == len(frame_records(legacy)) == 24
    assert len(read_video(video)) == 24
    assert f"wrote {events}" in err and f"wrote {video}" in err
    assert leftovers(tmp_path) == []


def test_display_without_a_screen_is_one_line_and_touches_no_file(
    monkeypatch, capsys, tmp_path, mean_bundle
):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    events = tmp_path / "events.jsonl"
    events.write_text("earlier run\n", encoding="utf-8")
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "stream",
        "--model",
        mean_bundle,
        "--source",
        "synthetic",
        "--sink",
        events,
        "--sink",
        "display://0",
    )
    assert_one_line_error(code, err, "error: cannot open display://0", "--headless")
    assert events.read_text(encoding="utf-8") == "earlier run\n"
    assert leftovers(tmp_path) == []


def test_headless_leaves_out_the_display(monkeypatch, capsys, tmp_path, mean_bundle):
    monkeypatch.delenv("DISPLAY", raising=False)
    events = tmp_path / "events.jsonl"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "stream",
        "--model",
        mean_bundle,
        "--max-frames",
        4,
        "--sink",
        "display://0",
        "--sink",
        events,
        "--headless",
        "--quiet",
    )
    assert code == 0, err
    assert "--headless: not opening display://0" in err
    assert len(frame_records(events)) == 4


def test_display_problem_names_a_headless_opencv(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")
    problem = display_problem("  GUI:                           NONE\n")
    assert problem is not None and "opencv-python-headless" in problem
    assert display_problem("  GUI:                           GTK3\n") is None
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        assert "DISPLAY" in display_problem("  GUI: GTK3\n")


def test_display_sink_shows_annotated_frames_and_q_ends_the_stream(
    monkeypatch, tmp_path, detector, digit_folder
):
    """No screen here: OpenCV's window calls are replaced, the sink's logic is real."""
    shown: list[tuple[str, tuple[int, ...]]] = []
    keys = iter([-1, -1, ord("q")])
    monkeypatch.setattr(display_module, "display_problem", lambda build_info=None: None)
    monkeypatch.setattr(cv2, "namedWindow", lambda name, flags=0: None)
    monkeypatch.setattr(cv2, "imshow", lambda name, image: shown.append((name, image.shape)))
    monkeypatch.setattr(cv2, "waitKey", lambda delay=0: next(keys, -1))
    monkeypatch.setattr(cv2, "destroyWindow", lambda name: None)
    events = tmp_path / "events.jsonl"
    display = DisplaySink(1)
    summary = run_stream(
        detector, open_source(str(digit_folder), loop=True), [JsonlSink(events), display]
    )
    assert summary.interrupted and summary.stopped_by == "q in the display window"
    assert shown == [("adedge display://1", (192, 192, 3))] * 3  # annotated, enlarged
    assert len(frame_records(events)) == 3 and display.closed


def test_sinks_opened_before_a_failure_are_discarded(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text("keep me\n", encoding="utf-8")
    (tmp_path / "video.avi").mkdir()  # a folder where the video should go
    overwrite = SinkSettings(existing=Existing.OVERWRITE)
    with pytest.raises(AdedgeError, match="is a folder"):
        open_sinks([str(events), f"file://{tmp_path / 'video.avi'}"], overwrite)
    assert events.read_text(encoding="utf-8") == "keep me\n"  # --overwrite, but no record
    assert leftovers(tmp_path) == []
    with pytest.raises(AdedgeError, match="same file"):
        open_sinks([str(events), f"jsonl://{events}"])


def _digit_result(grey: np.ndarray) -> FrameScore:
    """A result whose anomaly map is the digit's own ink (as a float map in [0, 3])."""
    result = FrameScore(0.7, True)
    result.amap = grey.astype(np.float32) / 85.0  # type: ignore[attr-defined]
    return result


def test_heatmap_overlay_and_colour_bar_in_the_video(tmp_path, digit_images):
    grey = digit_images[3]
    frame = Frame(0, 0.0, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), "digit")
    path = tmp_path / "heat.mkv"  # FFV1: lossless, the colours read back exactly
    with VideoSink(path, fps=5) as sink:
        sink.write(frame, _digit_result(grey))
        sink.write(frame, FrameScore(0.1, False))  # no amap: no heatmap, no colour bar
    with_map, without = read_video(path)
    factor = with_map.shape[0] // grey.shape[0]
    big = cv2.resize(grey, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    inner = np.zeros(big.shape, bool)
    inner[40:-20, 20:-40] = True  # away from the border, text bar and colour bar
    ink, paper = inner & (big > 200), inner & (big < 20)
    b, r = with_map[..., 0].astype(int), with_map[..., 2].astype(int)
    assert (r[ink] > b[ink] + 60).mean() > 0.9  # hot ink is red
    assert (b[paper] > r[paper] + 30).mean() > 0.9  # cold paper is blue
    plain = without[inner].astype(int)
    assert np.abs(plain[:, 0] - plain[:, 2]).max() <= 2  # grey stays grey without a map
    # the colour bar: red at its top, blue at its bottom, at the right edge below the text
    column = with_map[:, -12]
    rows = np.flatnonzero(column[:, 2].astype(int) - column[:, 0] > 100)
    blues = np.flatnonzero(column[:, 0].astype(int) - column[:, 2] > 100)
    assert rows.size and blues.size and rows.min() < blues.max()
    bar = without[rows.min() : blues.max(), -12].astype(int)
    assert np.abs(bar[:, 0] - bar[:, 2]).max() <= 2  # no colour bar without a map


def test_heatmap_scale_keeps_the_range_of_the_stream(digit_images):
    scale = HeatmapScale()
    assert scale.update(np.array([[1.0, 3.0]])) == (1.0, 3.0)
    assert scale.update(np.array([[2.0, 2.5]])) == (1.0, 3.0)  # a calm frame is not rescaled
    assert scale.update(np.array([[np.nan, 5.0]])) == (1.0, 5.0)
    empty = HeatmapScale()
    assert empty.update(np.array([[np.nan]])) == (0.0, 1.0)
    image = annotate(digit_images[0], 4, _digit_result(digit_images[0]), 0.5)
    assert image.shape == (192, 192, 3)


def test_frame_score_without_amap_still_annotates(digit_images):
    image = annotate(digit_images[0], 0, FrameScore(0.1, False), None)
    assert image.shape == (192, 192, 3)


# --- 5. synthetic scene on a real texture --------------------------------------------------


def _best_match(texture: np.ndarray, frame_bgr: np.ndarray) -> tuple[float, tuple[int, int]]:
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    result = cv2.matchTemplate(texture.astype(np.float32), grey, cv2.TM_CCOEFF_NORMED)
    _, best, _, where = cv2.minMaxLoc(result)
    return best, where


@pytest.mark.parametrize("name", ["brick", "grass", "gravel"])
def test_texture_frames_come_from_the_real_texture_and_move(name):
    from skimage import data

    size, margin = 128, 4  # the scene's margin: max(2, size // 32)
    photo = cv2.resize(
        getattr(data, name)(), (size + 2 * margin,) * 2, interpolation=cv2.INTER_AREA
    )
    others = [n for n in ("brick", "grass", "gravel") if n != name]
    frames = list(open_source(f"synthetic:texture={name},size={size},frames=40,seed=2"))
    places = set()
    for frame in frames:
        assert frame.image.shape == (size, size, 3) and frame.image.dtype == np.uint8
        if frame.truth:
            continue
        best, where = _best_match(photo, frame.image)
        assert best > 0.97, (name, frame.index, best)
        places.add(where)
        for other in others:
            wrong = cv2.resize(getattr(data, other)(), photo.shape[::-1], cv2.INTER_AREA)
            assert _best_match(wrong, frame.image)[0] < 0.5
    assert len(places) >= 4  # it moves ...
    assert all(0 <= x <= 2 * margin and 0 <= y <= 2 * margin for x, y in places)  # ... slightly
    again = list(open_source(f"synthetic:texture={name},size={size},frames=40,seed=2"))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, again, strict=True))
    assert [f.index for f in frames if f.truth] == [5, 15, 25, 35]


def test_texture_defects_are_local_and_the_default_stays_procedural():
    with_defects = open_source("synthetic:texture=gravel,size=96,seed=1")
    clean = open_source("synthetic:texture=gravel,size=96,seed=1,defect_every=0")
    for index in (5, 15, 25, 35):  # scratch, dark blob, stain, missing patch
        diff = np.abs(with_defects.render(index).astype(int) - clean.render(index)).max(axis=2)
        changed = (diff > 30).mean()
        assert 0.003 < changed < 0.2, (index, changed)
    assert "real texture 'gravel'" in with_defects.describe()
    assert "texture" not in open_source("synthetic").describe()


def test_texture_without_scikit_image_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # `import skimage` raises ImportError
    with pytest.raises(SourceError) as info:
        open_source("synthetic:texture=brick")
    line = info.value.one_line()
    assert "pip install scikit-image" in line and "\n" not in line
    open_source("synthetic:size=32")  # the procedural default needs no scikit-image
    with pytest.raises(SourceError) as info:
        open_source("synthetic:texture=wood")
    assert "texture=brick|grass|gravel" in info.value.one_line()


def _distance_bundle(folder: Path, centre: float, size: int = 32) -> Path:
    """A one-class model: |mean grey (normalised) - centre|, centre fitted on normal frames."""
    from bundles import FLOAT, onnx_model, tensor, write_bundle
    from onnx import helper, numpy_helper

    from adedge.preprocess import InputSpec

    model = onnx_model(
        [
            helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Sub", ["mean", "centre"], ["offset"]),
            helper.make_node("Abs", ["offset"], ["score"]),
        ],
        [tensor("image", FLOAT, ["N", 1, size, size])],
        [tensor("score", FLOAT, ["N"])],
        [numpy_helper.from_array(np.array(centre, np.float32), "centre")],
        name="distance_to_normal_mean",
    )
    return write_bundle(
        folder,
        model,
        InputSpec(size, size, "gray", (0.5,), (0.5,)),
        method="mean-distance",
        threshold=0.004,
        detail="test bundle: distance to the normal mean",
    )


@pytest.mark.parametrize("name", ["brick", "grass", "gravel"])
def test_texture_defects_are_detected_through_the_stream(tmp_path, detector, name):
    spec = f"synthetic:texture={name},size=128,seed=5,frames=60"
    # the mean model sees every defect as a large change of the frame mean ...
    tally = DetectionTally()
    run_stream(detector, open_source(spec), [tally], StreamOptions(batch=8))
    scores, truths = np.asarray(tally.scores), np.asarray(tally.truths, dtype=bool)
    assert truths.sum() == 6
    distance = np.abs(scores - np.median(scores[~truths]))
    assert distance[truths].min() > 1.5 * distance[~truths].max()
    # ... in both directions (a white scratch brightens, a missing patch darkens), so the
    # raw mean ranks them badly; |mean - normal mean|, fitted on defect-free frames only,
    # is a one-class detector that ranks every defect above every normal frame.
    clean = f"synthetic:texture={name},size=128,seed=9,frames=40,defect_every=0"
    centre = float(np.median([r.score for r in _record(detector, clean).results]))
    one_class = Detector(_distance_bundle(tmp_path / "distance", centre))
    tally = DetectionTally()
    summary = run_stream(one_class, open_source(spec), [tally], StreamOptions(batch=8))
    result = tally.summary()
    assert result is not None and result["frames_with_truth"] == 60
    assert result["auroc"] > 0.95, result
    assert summary.frames_scored == 60
