"""`adedge eval` prints and writes the operating points (the card's threshold, F1-optimal,
each target TPR) of the scores the Detector gives, and draws the ROC curve and the score
histogram as PNGs readable by OpenCV, without torch or matplotlib."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli

from adedge.data import load
from adedge.runtime.detector import Detector
from adedge.runtime.eval_plots import HISTOGRAM_SIZE, ROC_SIZE
from adedge.runtime.operating_points import curve, f1_optimal, point_at, target_tpr

pytestmark = pytest.mark.runtime
DATA = "digits:anomaly=0"


def test_eval_writes_operating_points_and_plots(monkeypatch, capsys, mean_bundle, tmp_path):
    out = tmp_path / "results" / "eval.json"
    code, stdout, err = run_cli(
        monkeypatch, capsys, "eval", "--model", mean_bundle, "--data", DATA, "--out", out
    )
    assert code == 0, err
    result = json.loads(out.read_text())
    points = {p["name"]: p for p in result["operating_points"]}
    assert list(points) == ["card", "f1", "tpr>=0.9", "tpr>=0.95", "tpr>=0.99"]
    test = load(DATA).test
    detector = Detector(mean_bundle)
    scores, _ = detector.score_images(test.images)
    roc = curve(test.labels, scores)
    card = point_at(test.labels, scores, detector.threshold, "card").to_dict()
    assert points["card"] == card
    assert points["card"]["tpr"] == result["tpr"]  # the same decision as rates_at
    assert points["f1"] == f1_optimal(roc).to_dict()
    for target in (0.9, 0.95, 0.99):
        point = points[f"tpr>={target:g}"]
        assert point == target_tpr(roc, target).to_dict() and point["tpr"] >= target
    assert "operating points" in stdout and "tpr>=0.95" in stdout and "precision" in stdout
    sizes = {"roc": ROC_SIZE, "histogram": HISTOGRAM_SIZE}
    for kind, (width, height) in sizes.items():
        path = out.parent / f"eval-{kind}.png"
        image = cv2.imread(str(path))
        assert image is not None and image.shape == (height, width, 3)
        assert image.std() > 10  # drawn on, not a blank canvas
        assert path.stat().st_size < 100_000
        assert str(path) in err


def test_eval_target_tprs_and_plots_folder(monkeypatch, capsys, mean_bundle, tmp_path):
    out, plots = tmp_path / "e.json", tmp_path / "plots"
    args = ["eval", "--model", mean_bundle, "--data", DATA, "--out", out]
    code, _, err = run_cli(
        monkeypatch, capsys, *args, "--target-tpr", "0.5,1", "--plots", plots, "--threshold", 0.1
    )
    assert code == 0, err
    names = [p["name"] for p in json.loads(out.read_text())["operating_points"]]
    assert names == ["--threshold", "f1", "tpr>=0.5", "tpr>=1"]
    assert sorted(p.name for p in plots.iterdir()) == ["e-histogram.png", "e-roc.png"]


@pytest.mark.parametrize("targets", ["0", "1.5", "0.9,x", "nan"])
def test_eval_refuses_a_bad_target_before_the_work(
    monkeypatch, capsys, mean_bundle, tmp_path, targets
):
    out = tmp_path / "e.json"
    args = ["eval", "--model", mean_bundle, "--data", DATA, "--out", out]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--target-tpr", targets)
    assert_one_line_error(code, err, "--target-tpr", "(0, 1]")
    assert not out.exists()


def blob_folder(root: Path) -> Path:
    """MVTec layout of 64 px grey images: normals at grey 20; 'dim' anomalies with an 80 px
    blob at 102 (0.4: under the image threshold 0.5, over the pixel threshold 0.3); 'spot'
    anomalies with a 4 px spot at 255 (over the image threshold, a region under 20 px)."""
    kinds = {"train/good": (6, None), "test/good": (4, None), "test/dim": (3, "dim")}
    kinds["test/spot"] = (2, "spot")
    for folder, (count, kind) in kinds.items():
        (root / folder).mkdir(parents=True)
        for i in range(count):
            image = np.full((64, 64), 20, np.uint8)
            if kind == "dim":
                image[10 + i : 18 + i, 20:30] = 102
            elif kind == "spot":
                image[40:42, 40 + i : 42 + i] = 255
            cv2.imwrite(str(root / folder / f"{i}.png"), image)
    return root


@pytest.mark.parametrize("pixel", [True, False])
def test_eval_with_pixel_decisions(monkeypatch, capsys, tmp_path, pixel):
    """With the card's pixel threshold, the detector's own decision (score or region) is one
    more point: the dim blobs the image score misses are caught by their regions."""
    from bundles import pixel_frame_bundle

    folder = pixel_frame_bundle(tmp_path / "b")
    out = tmp_path / "e.json"
    data = blob_folder(tmp_path / "data")
    args = ["eval", "--model", folder, "--data", data, "--out", out]
    code, stdout, err = run_cli(monkeypatch, capsys, *args, *([] if pixel else ["--no-pixel"]))
    assert code == 0, err
    result = json.loads(out.read_text())
    points = {p["name"]: p for p in result["operating_points"]}
    counts = {name: (p["tp"], p["fp"], p["tn"], p["fn"]) for name, p in points.items()}
    assert counts["card"] == (2, 0, 4, 3)  # the spots only
    if pixel:
        assert counts["card+pixel"] == (5, 0, 4, 0) and "card+pixel" in stdout
        assert result["pixel_decisions"]["flagged_by_regions"] == 3
        assert result["pixel_decisions"]["anomalous_caught_only_by_regions"] == 3
    else:
        assert "card+pixel" not in points and "pixel_decisions" not in result
    assert cv2.imread(str(tmp_path / "e-roc.png")) is not None
