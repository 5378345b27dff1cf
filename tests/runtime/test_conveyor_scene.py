"""The synthetic conveyor (``synthetic:texture=NAME,motion=conveyor``): a real photograph run
past the camera at its own pixel scale, the scale the ``texture:`` data sets train on."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from adedge.errors import SourceError
from adedge.runtime.sources import open_source

pytestmark = pytest.mark.runtime


def _where(photo: np.ndarray, frame_bgr: np.ndarray) -> tuple[float, tuple[int, int]]:
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    result = cv2.matchTemplate(photo.astype(np.float32), grey, cv2.TM_CCOEFF_NORMED)
    _, best, _, where = cv2.minMaxLoc(result)
    return best, where


@pytest.mark.parametrize("speed", [3, 5])
def test_the_belt_moves_the_unscaled_photograph_steadily_across_the_middle(speed):
    from skimage import data

    photo = data.brick()  # 512x512: the frame is cut from it unscaled
    spec = f"synthetic:texture=brick,motion=conveyor,size=128,frames=20,speed={speed}"
    frames = list(open_source(spec + ",defect_every=0"))
    places = []
    for frame in frames:
        assert frame.image.shape == (128, 128, 3)
        best, where = _where(photo, frame.image)
        assert best > 0.97, (frame.index, best)  # native scale: a resized frame would not match
        places.append(where)
    assert {y for _, y in places} == {(512 - 128) // 2}  # across the middle rows
    assert [x for x, _ in places] == [speed * i for i in range(20)]  # steadily, right to left
    assert "conveyor at" in open_source(spec).describe()


def test_the_belt_never_shows_a_seam_where_the_photograph_ends():
    """Past the photograph's right edge comes its mirror image: neighbouring columns stay
    as alike as anywhere else in the photograph."""
    scene = open_source("synthetic:texture=grass,motion=conveyor,size=128,speed=8,defect_every=0")
    edge = (512 - 64) // 8  # the frame whose column 64 is the photograph's last column
    frame = scene.background(edge)
    steps = np.abs(np.diff(frame[:, :, 0], axis=1)).mean(axis=0)
    assert steps[63] <= np.percentile(steps, 95)


def test_defects_come_at_known_frames_on_the_belt():
    with_defects = open_source("synthetic:texture=gravel,motion=conveyor,size=96,frames=30")
    clean = open_source("synthetic:texture=gravel,motion=conveyor,size=96,defect_every=0")
    truth = [frame.index for frame in with_defects if frame.truth]
    assert truth == [5, 15, 25]
    for index in truth:
        diff = np.abs(with_defects.render(index).astype(int) - clean.render(index)).max(axis=2)
        assert 0.003 < (diff > 30).mean() < 0.2


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("synthetic:motion=conveyor", "needs a real texture"),
        ("synthetic:texture=brick,motion=conveyor,size=600", "height <= 512"),
        ("synthetic:texture=brick,motion=conveyor,speed=0", "speed >= 1"),
        ("synthetic:texture=brick,motion=spin", "motion takes sway or conveyor"),
    ],
)
def test_a_belt_that_cannot_run_is_one_line(spec, named):
    with pytest.raises(SourceError) as info:
        open_source(spec)
    line = info.value.one_line()
    assert named in line and "\n" not in line
