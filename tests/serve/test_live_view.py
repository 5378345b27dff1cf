"""The live view's parts without a service: the drawing and its size, the JPEG shared by
every client (encoded once per frame), the MJPEG parts fed by a real LiveBuffer, and the
score histogram."""

from __future__ import annotations

import dataclasses
import threading
import time

import anyio
import cv2
import numpy as np
import pytest
from live_parts import decode, split_parts

from adedge.runtime.serve.api_cameras import score_histogram
from adedge.runtime.serve.api_types import LiveFrame, ScoreHistory, ScorePoint
from adedge.runtime.serve.live import LiveBuffer
from adedge.runtime.serve.live_view import (
    MAX_STREAM_FPS,
    LiveImages,
    Overlay,
    draw_live,
    live_size,
    mjpeg_parts,
    stream_fps,
)

pytestmark = pytest.mark.runtime


def defect_frame(seq: int, height: int = 240, width: int = 320, alarm: bool = True) -> LiveFrame:
    image = np.full((height, width, 3), 40, np.uint8)
    centre = (width * 3 // 4, height // 4)
    cv2.circle(image, centre, max(3, width // 20), (255, 255, 255), -1)
    amap = image[:, :, 0].astype(np.float32) / 255
    return LiveFrame(seq, 1_780_000_000.0 + seq, image, amap, 1.0, 0.5, alarm)


def test_live_image_sizes_fit_a_phone_and_stay_legible() -> None:
    assert live_size((1080, 1920)) == (540, 960)
    assert live_size((480, 640)) == (480, 640)
    assert live_size((96, 96)) == (384, 384)  # whole pixels: 4 x 96
    assert live_size((100, 900)) == (100, 900)  # 2 x 900 would pass 960
    frame = defect_frame(1, 1080, 1920)
    assert draw_live("line1", frame).shape == (540, 960, 3)


def test_the_heatmap_overlay_and_the_alarm_tag_are_drawn() -> None:
    frame = defect_frame(1)
    plain = draw_live("line1", frame, Overlay.NONE)
    heat = draw_live("line1", frame, Overlay.HEATMAP)
    calm = draw_live("line1", LiveFrame(1, frame.wall, frame.image, None, 0.1, 0.5, False))
    middle = (slice(100, 140), slice(40, 120))  # away from the defect, the bars and edges
    assert np.abs(plain[middle].astype(int) - heat[middle].astype(int)).mean() > 10
    red = (plain[:, :, 2] > 200) & (plain[:, :, 0] < 60) & (plain[:, :, 1] < 60)
    calm_red = (calm[:, :, 2] > 200) & (calm[:, :, 0] < 60) & (calm[:, :, 1] < 60)
    assert red[-1].mean() > 0.9 and red[:, 0].mean() > 0.9  # the border round an alarm
    assert not calm_red[-1].any()
    assert frame.image[100, 100, 0] == 40  # the shared frame was not drawn on


def test_pixel_decisions_outline_their_regions_on_the_unpainted_live_frame() -> None:
    """Before: the live view painted the heatmap over every frame, while the annotated video
    and the snapshots outlined the regions above the pixel threshold. Regions are placed on
    the shrunk live image (a 1920 px frame is shown 960 px wide)."""
    from adedge.runtime.regions import Region

    frame = defect_frame(1, 1080, 1920)
    x, y, side = 1400, 200, 100  # the region in frame pixels
    contour = np.array([[[x, y]], [[x + side, y]], [[x + side, y + side]], [[x, y + side]]])
    outlined = dataclasses.replace(
        frame, regions=[Region(side * side, (x, y, side, side), contour)]
    )
    drawn = draw_live("line1", outlined)
    plain = draw_live("line1", frame, Overlay.NONE)
    middle = (slice(300, 400), slice(100, 400))  # away from the region, the bars and edges
    assert np.array_equal(drawn[middle], plain[middle])  # no heatmap wash
    yellow = (drawn[:, :, 0] < 80) & (drawn[:, :, 1] > 200) & (drawn[:, :, 2] > 200)
    rows, cols = np.nonzero(yellow[60:])  # below the text bars: the outline and its area
    assert rows.size and cols.min() >= 690 and rows.min() + 60 >= 80  # at (x, y) / 2
    _, box_cols = np.nonzero(yellow[105:145])  # the outline's sides, below its area label
    assert box_cols.min() >= 690 and box_cols.max() <= 760  # 50 px wide: the region / 2
    assert frame.image[100, 100, 0] == 40  # the shared frame was not drawn on


def test_a_frame_is_encoded_once_for_every_client() -> None:
    images = LiveImages()
    frame = defect_frame(7)
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(images.jpeg("cam", frame))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(results) == 4 and len(set(results)) == 1
    assert images.encoded == 1
    assert decode(results[0]).shape == (240, 320, 3)
    images.jpeg("cam", frame, Overlay.NONE)  # another overlay is another image
    images.jpeg("other", frame)  # and another camera
    assert images.encoded == 3
    newer = defect_frame(8)
    assert images.jpeg("cam", newer) != results[0]
    assert images.encoded == 4


def test_stream_fps_is_capped() -> None:
    assert stream_fps(None) == 5.0
    assert stream_fps(2.0) == 2.0
    assert stream_fps(1000.0) == MAX_STREAM_FPS
    assert stream_fps(float("nan")) == 5.0


def test_mjpeg_parts_follow_new_frames_and_end_when_stopped() -> None:
    buffer = LiveBuffer()
    stop = threading.Event()
    images = LiveImages()
    sent: list[bytes] = []

    async def collect() -> None:
        parts = mjpeg_parts(buffer.latest, lambda f: images.jpeg("cam", f), 50, stop.is_set)
        async for part in parts:
            sent.append(part)

    def watch() -> None:
        anyio.run(collect)

    watcher = threading.Thread(target=watch)
    watcher.start()
    put = 0
    deadline = time.monotonic() + 20
    while len(split_parts(b"".join(sent))[0]) < 3 and time.monotonic() < deadline:
        frame = defect_frame(put + 1, alarm=put % 2 == 0)
        buffer.put(frame.wall, frame.image, frame.amap, frame.score, 0.5, frame.alarm)
        put += 1
        time.sleep(0.05)
    time.sleep(0.3)  # no frame scored: no part
    count = len(split_parts(b"".join(sent))[0])
    time.sleep(0.3)
    assert len(split_parts(b"".join(sent))[0]) == count
    stop.set()
    watcher.join(10)
    assert not watcher.is_alive(), "the stream did not end when stopped"
    parts, rest = split_parts(b"".join(sent))
    assert rest == len(b"".join(sent))
    assert 3 <= len(parts) <= put
    seqs = [part.seq for part in parts]
    assert seqs == sorted(set(seqs)) and seqs[-1] <= put  # every part a new frame
    assert len({part.jpeg for part in parts}) == len(parts)
    assert images.encoded == len(parts)
    for part in parts:
        assert decode(part.jpeg).shape == (240, 320, 3)


def test_a_stream_starts_with_the_newest_frame() -> None:
    buffer = LiveBuffer()
    frame = defect_frame(1)
    buffer.put(frame.wall, frame.image, frame.amap, 1.0, 0.5, True)

    async def first_part() -> bytes:
        parts = mjpeg_parts(buffer.latest, lambda f: LiveImages().jpeg("c", f), 5, lambda: False)
        part = await parts.__anext__()
        await parts.aclose()
        return part

    first = anyio.run(first_part)
    assert first.startswith(b"--frame\r\nContent-Type: image/jpeg\r\n")
    parts, rest = split_parts(first)
    assert len(parts) == 1 and rest == len(first) and parts[0].seq == 1


def test_the_histogram_counts_normal_and_alarm_scores_apart() -> None:
    points = [ScorePoint(t=i, score=0.1 + 0.01 * (i % 5), alarm=False) for i in range(40)]
    points += [ScorePoint(t=100 + i, score=0.9, alarm=True) for i in range(6)]
    points.append(ScorePoint(t=200, score=float("nan"), alarm=False))
    result = score_histogram(ScoreHistory(camera="c", threshold=0.5, points=points), 10)
    assert len(result.edges) == 11 and len(result.normal) == 10 == len(result.alarm)
    assert result.edges[0] == pytest.approx(0.1) and result.edges[-1] == pytest.approx(0.9)
    assert sum(result.normal) == 40 and sum(result.alarm) == 6
    assert result.alarm[-1] == 6
    empty = score_histogram(ScoreHistory(camera="c", threshold=0.5, points=[]), 4)
    assert empty.edges[0] < 0.5 < empty.edges[-1] and sum(empty.normal) == 0
    none = score_histogram(ScoreHistory(camera="c", threshold=None, points=[]), 3)
    assert none.edges == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
