"""`adedge eval` prints and writes the operating points (the card's threshold, F1-optimal,
each target TPR) of the scores the Detector gives, and draws the ROC curve and the score
histogram as PNGs readable by OpenCV, without torch or matplotlib."""

from __future__ import annotations

import json

import cv2
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
