"""`adedge threshold`: picks the threshold by its rule on the Detector's own scores, rewrites
only the card's threshold (the rest as the card writer writes it), leaves a bundle that
loads and a Detector that uses the new value; refuses in one line before any scoring."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli
from read_only import read_only

from adedge.bundle import CARD_NAME, load_bundle
from adedge.data import load
from adedge.metrics import quantile_threshold
from adedge.runtime.detector import Detector
from adedge.runtime.operating_points import curve, f1_optimal, target_tpr

pytestmark = pytest.mark.runtime
DATA = "digits:anomaly=0"


@pytest.fixture
def bundle(mean_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the mean bundle this test may rewrite."""
    return Path(shutil.copytree(mean_bundle, tmp_path / "bundle"))


def scores_of_the_test_split(bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    """The test split's labels and the Detector's scores of it."""
    detector = Detector(bundle)
    test = load(DATA).test
    scores, _ = detector.score_images(test.images)
    detector.close()
    return test.labels, scores


@pytest.mark.parametrize("rule", ["f1", "tpr=0.95"])
def test_labelled_rule_rewrites_only_the_threshold(monkeypatch, capsys, bundle, rule):
    before = load_bundle(bundle).card
    code, out, err = run_cli(
        monkeypatch, capsys, "threshold", "--model", bundle, "--data", DATA, "--rule", rule
    )
    assert code == 0, err
    labels, scores = scores_of_the_test_split(bundle)
    roc = curve(labels, scores)
    expected = f1_optimal(roc) if rule == "f1" else target_tpr(roc, 0.95)
    after = load_bundle(bundle).card  # still loads: the graphs' sha256 are untouched
    assert after.threshold.value == expected.threshold
    assert after.threshold.method == ("f1" if rule == "f1" else "tpr 0.95")
    assert (
        f"'{DATA}'" in after.threshold.detail
        and "502 images, 178 anomalous" in after.threshold.detail
    )
    # everything else is the card writer's output of the old card, byte for byte
    text = (bundle / CARD_NAME).read_text(encoding="utf-8")
    assert text == json.dumps(replace(before, threshold=after.threshold).to_dict(), indent=2) + "\n"
    assert after == replace(before, threshold=after.threshold)
    assert f"threshold {expected.threshold:.6g}" in out and "wrote threshold" in out
    detector = Detector(bundle)
    assert detector.threshold == expected.threshold
    test = load(DATA).test
    frames = [cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) for image in test.images[:60]]
    results = detector.score_frames(frames)
    detector.close()
    assert [r.score for r in results] == pytest.approx(scores[:60], abs=1e-6)
    assert [r.anomalous for r in results] == [r.score > expected.threshold for r in results]
    assert any(r.anomalous for r in results) and not all(r.anomalous for r in results)


def test_normal_rule_on_normal_only_data(monkeypatch, capsys, bundle, digit_folder):
    args = ["threshold", "--model", bundle, "--data", digit_folder, "--rule", "normal=0.9"]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    normal = load(str(digit_folder)).val
    detector = Detector(bundle)
    scores, _ = detector.score_images(normal.images)
    detector.close()
    card = load_bundle(bundle).card
    assert card.threshold.value == quantile_threshold(scores, 0.9)
    assert card.threshold.method == "quantile 0.9"  # as export writes it
    assert "held-out normal" in card.threshold.detail and "FPR" in out


def test_dry_run_leaves_the_card(monkeypatch, capsys, bundle):
    card = (bundle / CARD_NAME).read_bytes()
    args = ["threshold", "--model", bundle, "--data", DATA, "--rule", "f1", "--dry-run"]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "dry run" in out and "new: threshold" in out
    assert (bundle / CARD_NAME).read_bytes() == card


@pytest.mark.parametrize(
    "rule, words",
    [
        ("tpr=0", ["(0, 1]", "target TPR"]),
        ("tpr=1.5", ["(0, 1]"]),
        ("normal=0", ["(0, 1]", "normal quantile"]),
        ("f2", ["not a rule"]),
        ("tpr", ["not a rule"]),
    ],
)
def test_bad_rules_are_refused(monkeypatch, capsys, bundle, rule, words):
    card = (bundle / CARD_NAME).read_bytes()
    args = ["threshold", "--model", bundle, "--data", DATA, "--rule", rule]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, *words)
    assert (bundle / CARD_NAME).read_bytes() == card


@pytest.mark.parametrize("rule", ["f1", "tpr=0.9"])
def test_labelled_rule_on_data_without_anomalies(monkeypatch, capsys, bundle, digit_folder, rule):
    args = ["threshold", "--model", bundle, "--data", digit_folder, "--rule", rule]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "needs labelled data", "normal=0.99")
    assert not any(line.startswith("scoring ") for line in err.splitlines())


def test_read_only_bundle_is_refused_before_scoring(monkeypatch, capsys, bundle):
    card = (bundle / CARD_NAME).read_bytes()
    with read_only(bundle):
        args = ["threshold", "--model", bundle, "--data", DATA, "--rule", "f1"]
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert_one_line_error(code, err, "not writable", "--dry-run")
        assert not any(line.startswith("scoring ") for line in err.splitlines())
        code, out, err = run_cli(monkeypatch, capsys, *args, "--dry-run")
        assert code == 0, err
    assert (bundle / CARD_NAME).read_bytes() == card


def test_the_pixel_threshold_is_kept(monkeypatch, capsys, tmp_path):
    """A card with ``threshold.pixel`` (export's heatmap threshold) keeps it as it was."""
    from bundles import write_tile_bundle

    from adedge.card import PixelThreshold

    folder = write_tile_bundle(tmp_path / "tiles", None)
    pixel = PixelThreshold(0.3, 99.9, 20, (32, 32), "test")
    card = load_bundle(folder).card
    card = replace(card, threshold=replace(card.threshold, pixel=pixel))
    (folder / CARD_NAME).write_text(json.dumps(card.to_dict()), encoding="utf-8")
    args = ["threshold", "--model", folder, "--data", DATA, "--rule", "tpr=0.9"]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    after = load_bundle(folder).card.threshold
    assert after.pixel == pixel and after.method == "tpr 0.9"


def test_help(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "threshold", "--help")
    assert code == 0 and "--rule" in out and "--dry-run" in out
