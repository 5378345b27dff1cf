"""Frame sources read back real files: digit PNG folders and MJPG videos written here."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from adedge.errors import SourceError
from adedge.runtime.sources import (
    FFMPEG_OPTIONS_ENV,
    LOW_LATENCY_FFMPEG,
    LiveSource,
    SyntheticSource,
    ffmpeg_capture_options,
    open_source,
    redact_url,
    split_transport,
)

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed

FPS = 10.0  # the fps of the digit_video fixture


def nearest(image: np.ndarray, originals: list[np.ndarray]) -> int:
    """Index of the original frame closest to a (lossy, decoded) frame."""
    errors = [np.abs(image.astype(int) - o.astype(int)).mean() for o in originals]
    return int(np.argmin(errors))


# --- image folders -----------------------------------------------------------------------


def test_folder_yields_every_image_in_order_with_names(digit_folder, digit_frames):
    source = open_source(str(digit_folder))
    frames = list(source)
    assert [f.index for f in frames] == list(range(len(digit_frames)))
    assert [f.name for f in frames] == [str(p) for p in sorted(digit_folder.glob("*.png"))]
    for frame, original in zip(frames, digit_frames, strict=True):
        np.testing.assert_array_equal(frame.image, original)  # PNG is lossless, BGR kept
    assert all(f.truth is None for f in frames)
    assert not source.live and source.skipped == 0 and source.dropped == 0
    assert "24 files" in source.describe()


def test_glob_and_single_image(digit_folder, digit_frames):
    frames = list(open_source(str(digit_folder / "frame_01*.png")))
    assert [Path(f.name).name for f in frames] == [f"frame_{i:03d}.png" for i in range(10, 20)]
    single = list(open_source(str(digit_folder / "frame_003.png")))
    assert len(single) == 1
    np.testing.assert_array_equal(single[0].image, digit_frames[3])


def test_every_and_max_frames_on_a_folder(digit_folder):
    assert [f.index for f in open_source(str(digit_folder), every=5)] == [0, 5, 10, 15, 20]
    assert [f.index for f in open_source(str(digit_folder), max_frames=3)] == [0, 1, 2]
    frames = list(open_source(str(digit_folder), every=4, max_frames=2))
    assert [Path(f.name).name for f in frames] == ["frame_000.png", "frame_004.png"]


def test_loop_restarts_a_folder(digit_folder):
    frames = list(open_source(str(digit_folder), loop=True, max_frames=30))
    assert [f.index for f in frames] == list(range(30))
    assert frames[24].name == frames[0].name and frames[29].name == frames[5].name


def test_unreadable_images_are_skipped_and_counted(digit_folder, digit_frames):
    (digit_folder / "frame_005b.png").write_bytes(b"\x89PNG not really a png")
    truncated = (digit_folder / "frame_001.png").read_bytes()[:40]
    (digit_folder / "zz_truncated.png").write_bytes(truncated)
    source = open_source(str(digit_folder))
    frames = list(source)
    assert len(frames) == len(digit_frames)
    assert source.skipped == 2
    names = [Path(f.name).name for f in frames]
    assert "frame_005b.png" not in names and "zz_truncated.png" not in names


def test_fps_caps_the_rate_of_a_folder(digit_folder):
    start = time.monotonic()
    frames = list(open_source(str(digit_folder), fps=50.0, max_frames=6))
    assert len(frames) == 6
    assert time.monotonic() - start >= 5 / 50.0 - 0.005  # 5 waits of 1/50 s, at least


def test_empty_folder_is_a_source_error(tmp_path):
    with pytest.raises(SourceError) as info:
        open_source(str(tmp_path))
    assert "no images in folder" in info.value.one_line()


# --- video files -------------------------------------------------------------------------


@pytest.mark.parametrize("as_uri", [False, True])
def test_video_yields_every_frame_in_order(digit_video, digit_frames, as_uri):
    spec = digit_video.as_uri() if as_uri else str(digit_video)
    source = open_source(spec)
    frames = list(source)
    assert [f.index for f in frames] == list(range(len(digit_frames)))
    assert all(f.name == str(digit_video) for f in frames)
    assert [nearest(f.image, digit_frames) for f in frames] == list(range(len(digit_frames)))
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(24) / FPS, atol=1e-3)
    assert frames[0].image.shape == (64, 64, 3) and frames[0].image.dtype == np.uint8
    assert source.skipped == 0
    assert "24 frames" in source.describe()
    source.close()


def test_every_max_frames_and_loop_on_a_video(digit_video, digit_frames):
    frames = list(open_source(str(digit_video), every=4, max_frames=3))
    assert [f.index for f in frames] == [0, 4, 8]
    assert [nearest(f.image, digit_frames) for f in frames] == [0, 4, 8]
    looped = list(open_source(str(digit_video), loop=True, max_frames=30))
    assert [f.index for f in looped] == list(range(30))
    assert [nearest(f.image, digit_frames) for f in looped[24:]] == list(range(6))
    times = [f.timestamp for f in looped]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))


def test_corrupt_video_frame_is_skipped_and_counted(tmp_path, digit_frames, make_video):
    path = make_video(tmp_path / "corrupt.avi", digit_frames, FPS)
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(starts) == len(digit_frames)  # one JPEG per frame
    first, end = starts[7], starts[8] - 8  # blank frame 7's JPEG, keep the AVI chunk headers
    data[first:end] = bytes(end - first)
    path.write_bytes(bytes(data))
    source = open_source(str(path))
    frames = list(source)
    assert source.skipped == 1
    assert [f.index for f in frames] == [i for i in range(24) if i != 7]
    assert [nearest(f.image, digit_frames) for f in frames] == [f.index for f in frames]


def test_missing_or_undecodable_video_is_a_one_line_source_error(tmp_path):
    with pytest.raises(SourceError) as info:
        open_source(str(tmp_path / "missing.mp4"))
    line = info.value.one_line()
    assert "missing.mp4" in line and "check the path" in line and "\n" not in line
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceError) as info:
        open_source(str(fake))
    assert "cannot decode" in info.value.one_line() and "codec" in info.value.one_line()


# --- live sources --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["camera9", "9", "/dev/video9", "v4l2:///dev/video9"])
def test_missing_camera_is_a_one_line_source_error(spec):
    with pytest.raises(SourceError) as info:
        open_source(spec)
    line = info.value.one_line()
    assert "no camera at" in line and "9" in line and "v4l2-ctl" in line and "\n" not in line


def test_unreachable_rtsp_is_a_source_error_without_the_password(monkeypatch):
    monkeypatch.delenv(FFMPEG_OPTIONS_ENV, raising=False)
    for url in (
        "rtsp://admin:secret@127.0.0.1:9/stream",
        "rtsp://admin:secret@127.0.0.1:9/stream?transport=udp",
    ):
        with pytest.raises(SourceError) as info:
            open_source(url)  # port 9: connection refused
        line = info.value.one_line()
        assert "127.0.0.1:9/stream" in line and "secret" not in line and "stream?" not in line
    assert FFMPEG_OPTIONS_ENV not in os.environ  # set for the open only, then restored


def test_rtsp_transport_is_chosen_in_the_url():
    assert split_transport("rtsp://cam/s?transport=udp") == ("rtsp://cam/s", "udp")
    assert split_transport("rtsp://cam/s?a=1&transport=TCP&b") == ("rtsp://cam/s?a=1&b", "tcp")
    assert split_transport("rtsp://cam/s?a=1") == ("rtsp://cam/s?a=1", None)
    assert ffmpeg_capture_options("udp", "rtsp").startswith("rtsp_transport;udp|")
    assert ffmpeg_capture_options(None, "rtsp").startswith("rtsp_transport;tcp|")
    assert "rtsp_transport" not in ffmpeg_capture_options(None, "http")
    assert "fflags;nobuffer" in LOW_LATENCY_FFMPEG
    for bad in ("rtsp://u:pw@cam/s?transport=sctp", "http://cam/s?transport=udp"):
        with pytest.raises(SourceError) as info:
            split_transport(bad)
        assert "transport=tcp|udp" in info.value.one_line() and "pw" not in info.value.one_line()


def test_rtsp_transport_and_the_ffmpeg_variable_cannot_both_be_set(monkeypatch):
    monkeypatch.setenv(FFMPEG_OPTIONS_ENV, "rtsp_transport;tcp")
    with pytest.raises(SourceError, match="both set"):
        open_source("rtsp://127.0.0.1:9/stream?transport=udp")


def test_redact_url():
    assert redact_url("rtsp://u:pw@cam:554/s") == "rtsp://u:***@cam:554/s"
    assert redact_url("rtsp://cam/s") == "rtsp://cam/s"


def test_live_thread_keeps_the_newest_frame_and_counts_drops(digit_video, digit_frames):
    """A video read as if it were a camera: every captured frame is delivered or dropped."""
    source = LiveSource(
        "test-live", lambda: cv2.VideoCapture(str(digit_video)), fail=SourceError("x"), max_reopen=0
    )
    assert source.live
    delivered = []
    for frame in source:
        delivered.append(frame)
        time.sleep(0.02)  # a model slower than the camera
    source.close()
    indices = [f.index for f in delivered]
    assert indices == sorted(set(indices))
    assert len(delivered) + source.dropped == len(digit_frames)
    assert source.dropped > 0
    assert indices[-1] == len(digit_frames) - 1  # the newest frame is never dropped
    assert nearest(delivered[-1].image, digit_frames) == len(digit_frames) - 1


def test_live_source_reopens_after_a_failed_read(digit_video):
    """At the end of the file the read fails: the source reopens it and carries on."""
    source = LiveSource(
        "test-live",
        lambda: cv2.VideoCapture(str(digit_video)),
        fail=SourceError("x"),
        max_reopen=2,
        backoff=0.01,
    )
    seen = 0
    for frame in source:
        seen += 1
        if frame.index >= 30:  # from the second pass
            break
    source.close()
    assert source.reopened >= 1 and seen > 0
    assert source._thread is not None and not source._thread.is_alive()


# --- synthetic scene -----------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed():
    first = list(open_source("synthetic:seed=1,size=64", max_frames=12))
    again = list(open_source("synthetic:seed=1,size=64,frames=12"))
    other = list(open_source("synthetic:seed=2,size=64", max_frames=12))
    assert len(first) == len(again) == 12
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(first[0].image, other[0].image)
    assert first[0].image.shape == (64, 64, 3) and first[0].image.dtype == np.uint8
    np.testing.assert_allclose([f.timestamp for f in first], np.arange(12) / 25.0)


def test_synthetic_injects_defects_at_known_frames():
    frames = list(open_source("synthetic:seed=4,size=128,frames=40"))
    assert [f.index for f in frames if f.truth] == [5, 15, 25, 35]
    assert all(f.truth is False for f in frames if f.index not in (5, 15, 25, 35))
    assert all(f.name == "synthetic" for f in frames)


def test_synthetic_defects_are_local_changes():
    """Frame t with a defect equals the defect-free frame t except in a small region."""
    with_defects = open_source("synthetic:seed=4,size=128")
    without = open_source("synthetic:seed=4,size=128,defect_every=0")
    assert isinstance(with_defects, SyntheticSource) and isinstance(without, SyntheticSource)
    for index in (4, 5, 15, 25, 35):
        changed = np.any(with_defects.render(index) != without.render(index), axis=2).mean()
        if with_defects.is_defect(index):
            assert 0.002 < changed < 0.08, (index, changed)
        else:
            assert changed == 0.0
    assert "defects every 10 frames from frame 5" in with_defects.describe()


def test_synthetic_every_keeps_truth_and_bad_options_fail():
    frames = list(open_source("synthetic:size=32,frames=30", every=5))
    assert [(f.index, f.truth) for f in frames] == [
        (0, False),
        (5, True),
        (10, False),
        (15, True),
        (20, False),
        (25, True),
    ]
    for spec in ("synthetic:colour=red", "synthetic:size=big", "synthetic:size=4"):
        with pytest.raises(SourceError):
            open_source(spec)


def test_bad_spellings_and_options_are_source_errors():
    for spec in ("ftp://host/x.mp4", ""):
        with pytest.raises(SourceError):
            open_source(spec)
    with pytest.raises(SourceError):
        open_source("synthetic", every=0)
    with pytest.raises(SourceError):
        open_source("synthetic", fps=0)


def test_file_uri_with_an_escaped_space(tmp_path, digit_video):
    folder = tmp_path / "my videos"
    folder.mkdir()
    target = folder / "clip one.avi"
    target.write_bytes(digit_video.read_bytes())
    assert "%20" in target.as_uri()
    assert len(list(open_source(target.as_uri(), max_frames=3))) == 3
