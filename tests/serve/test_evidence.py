"""Event evidence on real images: the hottest heatmap region, masks, the snapshot, the
heatmap PNG, the raw frame, and MP4 clips read back through OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from video_files import read_video, video_fps

from adedge.runtime.serve.config import EvidenceConfig
from adedge.runtime.serve.event_types import Box, MediaKind
from adedge.runtime.serve.evidence import (
    CameraMask,
    ClipRecorder,
    PeakFrame,
    PreRoll,
    apply_mask,
    draw_snapshot,
    encode_jpeg,
    heatmap_png,
    hottest_box,
    mask_array,
    read_heatmap_png,
    write_evidence,
)
from adedge.runtime.sources import open_source

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed

SIDE = 256
BLOB_CENTRE = (170, 150)  # (x, y) in a SIDE x SIDE map
BLOB_RADIUS = 10


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Ten real frames of the synthetic textured surface (BGR uint8, SIDE x SIDE)."""
    source = open_source(f"synthetic:seed=1,size={SIDE},frames=10")
    try:
        return [frame.image for frame in source]
    finally:
        source.close()


def blob_map(
    side: int = SIDE, centre: tuple[int, int] = BLOB_CENTRE, radius: float = BLOB_RADIUS
) -> np.ndarray:
    """Low noise (0..0.1) with one Gaussian blob of height 1 at ``centre`` (x, y)."""
    noise = np.random.default_rng(0).uniform(0.0, 0.1, (side, side))
    return (noise + gaussian(side, centre, radius)).astype(np.float32)


def gaussian(side: int, centre: tuple[int, int], radius: float) -> np.ndarray:
    ys, xs = np.mgrid[:side, :side]
    return np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * radius**2))


def contains(box: Box, x: float, y: float) -> bool:
    return box.x <= x < box.x + box.width and box.y <= y < box.y + box.height


def only_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# --- the hottest region ----------------------------------------------------------------


def test_hottest_box_finds_the_blob_and_is_small() -> None:
    box = hottest_box(blob_map(), (SIDE, SIDE))
    assert box is not None
    cx, cy = BLOB_CENTRE
    for dx, dy in ((0, 0), (-5, -5), (5, 5), (-5, 5), (5, -5)):  # the blob's core
        assert contains(box, cx + dx, cy + dy), box
    assert box.width * box.height < 0.05 * SIDE * SIDE
    assert box.width >= BLOB_RADIUS and box.height >= BLOB_RADIUS


def test_hottest_box_scales_a_small_map_to_the_frame() -> None:
    small = blob_map(64, (40, 20), 3)
    box = hottest_box(small, (256, 512))  # frame 512 wide, 256 high: x * 8, y * 4
    assert box is not None
    assert contains(box, 40 * 8, 20 * 4)
    assert box.x + box.width <= 512 and box.y + box.height <= 256
    unscaled = hottest_box(small, (64, 64))
    assert unscaled is not None
    assert abs(box.x - unscaled.x * 8) <= 8 and abs(box.width - unscaled.width * 8) <= 16
    assert abs(box.y - unscaled.y * 4) <= 4 and abs(box.height - unscaled.height * 4) <= 8


def test_hottest_box_is_none_for_flat_or_broken_maps() -> None:
    assert hottest_box(np.full((32, 32), 0.7, np.float32), (32, 32)) is None
    assert hottest_box(np.full((32, 32), np.nan, np.float32), (32, 32)) is None
    assert hottest_box(np.zeros((0, 0), np.float32), (32, 32)) is None


def test_hottest_box_ignores_nan_and_infinite_pixels() -> None:
    amap = blob_map()
    amap[:20, :] = np.nan
    amap[-5:, -5:] = -np.inf
    box = hottest_box(amap, (SIDE, SIDE))
    assert box is not None and contains(box, *BLOB_CENTRE)


# --- masks -----------------------------------------------------------------------------


def test_mask_array_fills_the_polygon_in_frame_pixels() -> None:
    top_right = [(0.5, 0.0), (1.0, 0.0), (1.0, 0.5), (0.5, 0.5)]
    mask = mask_array([top_right], (100, 200))
    assert mask is not None and mask.dtype == bool and mask.shape == (100, 200)
    assert mask[:50, 100:].all()
    assert not mask[51:, :].any() and not mask[:, :99].any()
    assert mask_array([], (100, 200)) is None


def test_mask_array_skips_degenerate_and_outside_polygons() -> None:
    line = [(0.1, 0.1), (0.5, 0.5), (0.9, 0.9)]  # no area
    two_points = [(0.1, 0.1), (0.9, 0.9)]
    outside = [(1.5, 1.5), (2.0, 1.5), (2.0, 2.0)]
    broken = [(0.1, 0.1), (float("nan"), 0.5), (0.9, 0.2)]
    assert mask_array([line, two_points, outside, broken], (64, 64)) is None
    half_outside = [(0.5, 0.5), (3.0, 0.5), (3.0, 3.0), (0.5, 3.0)]
    mask = mask_array([half_outside], (64, 64))
    assert mask is not None and mask[32:, 32:].all() and not mask[:31, :].any()


def test_a_masked_hot_blob_gives_no_box_there() -> None:
    amap = blob_map()
    amap += 0.6 * gaussian(SIDE, (60, 60), 8).astype(np.float32)  # a weaker second blob
    polygon = [(0.55, 0.45), (0.8, 0.45), (0.8, 0.7), (0.55, 0.7)]  # covers BLOB_CENTRE
    mask = CameraMask([polygon]).for_size((SIDE, SIDE))
    assert mask is not None and mask[BLOB_CENTRE[1], BLOB_CENTRE[0]]
    assert contains(hottest_box(amap, (SIDE, SIDE)), *BLOB_CENTRE)
    masked = apply_mask(amap, mask)
    assert masked is not amap and amap[BLOB_CENTRE[1], BLOB_CENTRE[0]] > 1.0  # a copy
    assert np.all(masked[mask] == amap[~mask].min())
    box = hottest_box(masked, (SIDE, SIDE))
    assert box is not None and contains(box, 60, 60)  # the weaker blob, outside the mask
    ys, xs = np.nonzero(mask)
    assert box.x + box.width <= xs.min() or box.y + box.height <= ys.min()
    assert apply_mask(amap, None) is amap


def test_apply_mask_stretches_a_mask_of_another_size() -> None:
    mask = mask_array([[(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]], (SIDE, SIDE))
    small = blob_map(64, (10, 32), 4)
    masked = apply_mask(small, mask)
    assert masked.shape == (64, 64) and np.all(masked[:, :32] == small[:, 32:].min())


# --- images ----------------------------------------------------------------------------


def red_fraction(image: np.ndarray, rows: slice, cols: slice) -> float:
    blue, green, red = (image[rows, cols, channel].astype(int) for channel in range(3))
    return float(np.mean((red > 150) & (green < 100) & (blue < 100)))


def test_snapshot_is_a_jpeg_of_frame_size_with_the_box_outlined_in_red(frames) -> None:
    frame, amap = frames[3], blob_map()
    box = hottest_box(amap, frame.shape[:2])
    snapshot = draw_snapshot(PeakFrame("line3", 1_764_000_000.0, frame, amap, box, 2.5, 1.0))
    assert snapshot.shape == frame.shape and snapshot.dtype == np.uint8
    decoded = cv2.imdecode(np.frombuffer(encode_jpeg(snapshot, 90), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == frame.shape
    left, top = box.x, box.y
    right, bottom = box.x + box.width - 1, box.y + box.height - 1
    horizontal = slice(left + 3, right - 2)
    vertical = slice(top + 3, bottom - 2)
    assert red_fraction(decoded, slice(top, top + 1), horizontal) > 0.8
    assert red_fraction(decoded, slice(bottom, bottom + 1), horizontal) > 0.8
    assert red_fraction(decoded, vertical, slice(left, left + 1)) > 0.8
    assert red_fraction(decoded, vertical, slice(right, right + 1)) > 0.8
    assert red_fraction(decoded, slice(SIDE // 2 - 60, SIDE // 2), slice(20, 80)) < 0.05
    # the heatmap is overlaid: the blob is painted warmer than the plain frame there
    cx, cy = BLOB_CENTRE
    assert decoded[cy, cx, 2] > frame[cy, cx, 2] + 40 or decoded[cy, cx, 0] < frame[cy, cx, 0]


def test_snapshot_without_a_map_of_a_grey_frame(frames) -> None:
    grey = cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY)
    snapshot = draw_snapshot(PeakFrame("cam", 0.0, grey, None, None, 0.2, 1.0))
    assert snapshot.shape == (SIDE, SIDE, 3)
    body = slice(SIDE // 2, SIDE)
    assert np.array_equal(snapshot[body, body], cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)[body, body])


def test_heatmap_png_is_16_bit_with_the_blob_brightest() -> None:
    amap = blob_map() * 3.0 - 1.0
    amap[0, 0] = np.nan
    data = heatmap_png(amap)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint16 and image.shape == (SIDE, SIDE)
    peak_y, peak_x = np.unravel_index(int(np.argmax(image)), image.shape)
    assert np.hypot(peak_x - BLOB_CENTRE[0], peak_y - BLOB_CENTRE[1]) <= 2
    assert image.max() == 65535 and image.min() == 0
    restored, low, high = read_heatmap_png(data)
    finite = np.isfinite(amap)
    assert low == pytest.approx(float(amap[finite].min()))
    assert high == pytest.approx(float(amap[finite].max()))
    assert np.allclose(restored[finite], amap[finite], atol=(high - low) / 65535)


def test_heatmap_png_of_a_flat_map() -> None:
    restored, low, high = read_heatmap_png(heatmap_png(np.full((8, 8), 2.0, np.float32)))
    assert low == high == 2.0 and np.all(restored == 2.0)


def test_write_evidence_writes_what_the_options_ask(tmp_path: Path, frames) -> None:
    def store_media_file(kind: MediaKind, suffix: str) -> Path:
        return tmp_path / "media" / f"event-{kind.value}{suffix}"

    frame, amap = frames[5], blob_map()
    box = hottest_box(amap, frame.shape[:2])
    options = EvidenceConfig(jpeg_quality=80)
    peak = PeakFrame("cam", 1_764_000_000.0, frame, amap, box, 1.5, 1.0)
    written = write_evidence(store_media_file, peak, options)
    assert set(written) == {MediaKind.SNAPSHOT, MediaKind.FRAME, MediaKind.HEATMAP}
    media = tmp_path / "media"
    names = ["event-frame.jpg", "event-heatmap.png", "event-snapshot.jpg"]
    assert only_files(media) == names  # no temporary left
    raw = cv2.imread(str(written[MediaKind.FRAME]))
    assert raw.shape == frame.shape and np.mean(np.abs(raw.astype(int) - frame)) < 4
    assert cv2.imread(str(written[MediaKind.SNAPSHOT])).shape == frame.shape
    heat = cv2.imread(str(written[MediaKind.HEATMAP]), cv2.IMREAD_UNCHANGED)
    assert heat.dtype == np.uint16

    options = EvidenceConfig(snapshot=False, raw_frame=True, heatmap=True)
    peak = PeakFrame("cam", 0.0, frame, None, None, 1.5, 1.0)
    written = write_evidence(store_media_file, peak, options, heat_range=(0, 1))
    assert set(written) == {MediaKind.FRAME}  # no map: no heatmap


# --- pre-roll and clips ----------------------------------------------------------------


def test_preroll_is_bounded_by_seconds_frames_and_bytes(frames) -> None:
    by_time = PreRoll(seconds=2.0)
    for index in range(100):
        by_time.add(index * 0.25, frames[index % 10])
    walls = [wall for wall, _ in by_time.frames()]
    assert walls == [index * 0.25 for index in range(91, 100)]  # 22.75 .. 24.75
    by_count = PreRoll(seconds=60.0, max_frames=5)
    for index in range(50):
        by_count.add(float(index), frames[index % 10])
    assert [wall for wall, _ in by_count.frames()] == [45.0, 46.0, 47.0, 48.0, 49.0]
    by_bytes = PreRoll(seconds=60.0, max_bytes=3 * frames[0].nbytes)
    for index in range(20):
        by_bytes.add(float(index), frames[index % 10])
    assert len(by_bytes.frames()) == 3
    off = PreRoll(seconds=0.0)
    off.add(1.0, frames[0])
    assert off.frames() == []


def test_clip_with_preroll_event_and_postroll(tmp_path: Path, frames) -> None:
    pre = PreRoll(seconds=10.0)
    for index in range(10):  # 4 fps: 0.0 .. 2.25
        pre.add(index * 0.25, frames[index])
    path = tmp_path / "clips" / "event.mp4"
    clip = ClipRecorder(path, pre.frames(), post_seconds=1.0, fps=None)
    assert clip.fps == pytest.approx(4.0)
    event = [frames[0], cv2.resize(frames[1], (100, 60)), frames[2], frames[3], frames[4]]
    event[3] = cv2.cvtColor(event[3], cv2.COLOR_BGR2GRAY)  # other sizes and grey too
    for index, frame in enumerate(event):  # 2.5 .. 3.5
        clip.add(2.5 + index * 0.25, frame)
    clip.end_event(3.5)  # post-roll to 4.5: 3.75, 4.0, 4.25, 4.5
    wall = 3.75
    while not clip.done:
        clip.add(wall, frames[int(wall * 4) % 10])
        wall += 0.25
    assert wall == 5.0  # the frame at 4.75 ended it
    assert clip.finish() == path
    assert only_files(path.parent) == ["event.mp4"]
    images, fps = read_video(path), video_fps(path)
    assert len(images) == 10 + 5 + 4
    assert fps == pytest.approx(4.0, abs=0.01)
    assert all(image.shape == (SIDE, SIDE, 3) for image in images)
    assert np.mean(np.abs(images[0].astype(int) - frames[0])) < 12  # the pre-roll first
    assert clip.finish() == path  # twice is fine
    clip.add(9.0, frames[0])  # after the end: ignored


def test_clip_finished_early_still_plays(tmp_path: Path, frames) -> None:
    """SIGTERM mid-event: finish() writes the pre-roll not yet encoded and closes the file."""
    pre = [(index * 0.1, frames[index]) for index in range(10)]
    path = tmp_path / "early.mp4"
    clip = ClipRecorder(path, pre, post_seconds=3.0, fps=12.5)
    clip.add(1.0, frames[0])
    clip.add(1.1, frames[1])
    assert not clip.done
    assert any(name.endswith(".mp4") and name != "early.mp4" for name in only_files(tmp_path))
    assert clip.finish() == path
    assert only_files(tmp_path) == ["early.mp4"]
    images, fps = read_video(path), video_fps(path)
    assert len(images) == 12 and fps == pytest.approx(12.5, abs=0.01)


def test_clip_of_odd_size_is_cut_to_even_sides(tmp_path: Path, frames) -> None:
    path = tmp_path / "odd.mp4"
    clip = ClipRecorder(path, [], post_seconds=0.0, fps=5.0)
    for index in range(3):
        clip.add(float(index), frames[index][:101, :77])
    clip.end_event(2.0)
    assert clip.done
    assert clip.finish() == path
    images = read_video(path)
    assert len(images) == 3 and images[0].shape == (100, 76, 3)


def test_clip_limits_and_empty_clips(tmp_path: Path, frames) -> None:
    long = ClipRecorder(tmp_path / "long.mp4", [], post_seconds=1.0, fps=10.0, max_seconds=0.5)
    for index in range(20):
        long.add(index * 0.1, frames[index % 10])
    assert long.done and long.frames_written == 5
    long.finish()
    assert len(read_video(tmp_path / "long.mp4")) == 5

    empty = ClipRecorder(tmp_path / "empty.mp4", [], post_seconds=1.0, fps=None)
    assert empty.fps == 10.0  # nothing to estimate from
    assert empty.finish() is None
    aborted = ClipRecorder(tmp_path / "aborted.mp4", [(0.0, frames[0])], 1.0, None)
    aborted.add(0.1, frames[1])
    aborted.abort()
    assert aborted.finish() is None
    assert only_files(tmp_path) == ["long.mp4"]
