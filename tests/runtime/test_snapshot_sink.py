"""``--snapshots DIR``: the frame that raises each alarm, annotated, as DIR/alarm-<frame>.jpg."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli

pytestmark = pytest.mark.runtime

# the mean bundle scores a frame by its mean grey (threshold 0: mid-grey); bright frames alarm
BRIGHT = [False, True, True, False, True, False, False, True]
RAISED = [1, 4, 7]  # frames where an alarm starts (one anomalous frame raises one)


@pytest.fixture
def frames(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, bright in enumerate(BRIGHT):
        grey = np.full((48, 48, 3), 230 if bright else 25, np.uint8)
        cv2.imwrite(str(folder / f"{index:03d}.png"), grey)
    return folder


def stream(monkeypatch, capsys, bundle, frames, *more):
    return run_cli(
        monkeypatch, capsys, "stream", "--model", bundle, "--source", frames, "--quiet", *more
    )


@pytest.mark.parametrize("how", ["--snapshots", "--sink"])
def test_one_annotated_picture_per_alarm(monkeypatch, capsys, tmp_path, mean_bundle, frames, how):
    shots = tmp_path / "shots"
    target = str(shots) if how == "--snapshots" else f"snapshots://{shots}"
    code, _, err = stream(monkeypatch, capsys, mean_bundle, frames, how, target)
    assert code == 0, err
    names = sorted(path.name for path in shots.iterdir())
    assert names == [f"alarm-{index:07d}.jpg" for index in RAISED]
    picture = cv2.imread(str(shots / names[0]))
    assert picture is not None and min(picture.shape[:2]) >= 48
    border = picture[1, picture.shape[1] // 2]  # the annotated frame's red border (BGR)
    assert border[2] > 150 and border[1] < 100, border
    assert f"wrote {shots}" in err


def test_earlier_snapshots_are_refused_kept_added_to_or_replaced(
    monkeypatch, capsys, tmp_path, mean_bundle, frames
):
    shots = tmp_path / "shots"
    shots.mkdir()
    stale = shots / "alarm-0000099.jpg"
    stale.write_bytes(b"an earlier run's")
    code, _, err = stream(monkeypatch, capsys, mean_bundle, frames, "--snapshots", shots)
    assert_one_line_error(code, err, "earlier run", "--overwrite", "--append")
    assert stale.read_bytes() == b"an earlier run's"  # refused before anything was written
    code, _, err = stream(
        monkeypatch, capsys, mean_bundle, frames, "--snapshots", shots, "--append"
    )
    assert code == 0, err
    assert stale.exists() and len(list(shots.iterdir())) == 1 + len(RAISED)
    code, _, err = stream(
        monkeypatch, capsys, mean_bundle, frames, "--snapshots", shots, "--overwrite"
    )
    assert code == 0, err
    assert not stale.exists() and len(list(shots.iterdir())) == len(RAISED)


def test_snapshots_into_a_file_is_one_line(monkeypatch, capsys, tmp_path, mean_bundle, frames):
    taken = tmp_path / "taken.jpg"
    taken.write_bytes(b"x")
    code, _, err = stream(monkeypatch, capsys, mean_bundle, frames, "--snapshots", taken)
    assert_one_line_error(code, err, "is a file", "folder")
