"""Which epoch becomes best.pt: the ``last``, ``pseudo`` and ``val_loss`` rules (tiny Y-GAN
runs on 300 digits), the pseudo-anomalies they use, and the per-method defaults."""

import json

import numpy as np
import pytest
import torch
from method_harness import digits

from adedge.errors import AdedgeError
from adedge.preprocess import InputSpec
from adedge.train.checkpoint import load_checkpoint
from adedge.train.methods import load_method
from adedge.train.selection import pseudo_anomalies, selection_value
from adedge.train.trainer import TrainOptions, train

DATA = "digits:anomaly=0,limit=300"


def run(tmp_path, selection, epochs=2):
    out = tmp_path / selection
    options = TrainOptions(
        "ygan",
        DATA,
        out,
        preset="tiny",
        epochs=epochs,
        overrides={"selection": selection},
        monitor_test=False,
    )
    return out, train(options, log=lambda _: None).history


def test_last_makes_best_the_last_epoch_and_logs_ygan_metrics(tmp_path):
    out, history = run(tmp_path, "last")
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert best.epoch == last.epoch == 2
    assert best.model.keys() == last.model.keys()
    assert all(torch.equal(best.model[k], last.model[k]) for k in last.model)
    assert json.loads((out / "run.json").read_text())["selection"] == "last"
    written = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    for record in written:
        assert record["selection"] == "last" and record["best_epoch"] == record["epoch"]
        for key in ("val_acc_zs", "val_acc_zr", "val_cos_zs", "val_cos_zr", "val_pseudo_auroc"):
            assert np.isfinite(record[key]), key
        assert 0 <= record["val_pseudo_auroc"] <= 1 and 0 <= record["val_acc_zr"] <= 1


@pytest.mark.parametrize("selection", ["pseudo", "val_loss"])
def test_pseudo_and_val_loss_pick_the_epoch_their_value_ranks_first(tmp_path, selection):
    out, history = run(tmp_path, selection, epochs=3)
    if selection == "pseudo":  # the highest AUROC, the first of equals
        expected = int(np.argmax([h["val_pseudo_auroc"] for h in history])) + 1
    else:
        expected = int(np.argmin([h["val_loss"] for h in history])) + 1
    assert load_checkpoint(out / "best.pt").epoch == expected
    assert history[-1]["best_epoch"] == expected
    assert all(h["selection"] == selection for h in history)


def test_an_unknown_rule_is_refused_before_the_data_is_loaded(tmp_path):
    options = TrainOptions(
        "ygan", "digits:anomaly=0", tmp_path / "r", preset="tiny", overrides={"selection": "best"}
    )
    with pytest.raises(AdedgeError, match="unknown selection 'best'"):
        train(options, log=lambda _: None)
    assert not (tmp_path / "r").exists()


def test_selection_values_lower_is_better():
    assert selection_value("last", 3, 0.2, 0.9) < selection_value("last", 2, 0.1, 0.99)
    assert selection_value("pseudo", 1, 0.2, 0.9) < selection_value("pseudo", 2, 0.1, 0.8)
    assert selection_value("pseudo", 1, 0.2, float("nan")) == np.inf
    assert selection_value("val_loss", 1, 0.2, 0.9) == 0.2


@pytest.mark.parametrize("colour", ["gray", "rgb"])
def test_pseudo_anomalies_are_fixed_defects_in_the_input_range(colour):
    images = digits(8)
    if colour == "rgb":
        images = images.expand(-1, 3, -1, -1).contiguous()
    spec = InputSpec(32, 32, colour, (0.5,) * images.shape[1], (0.5,) * images.shape[1])
    pseudo = pseudo_anomalies(images, spec)
    assert pseudo.shape == images.shape and pseudo.dtype == images.dtype
    assert torch.equal(pseudo, pseudo_anomalies(images, spec))  # the same set every epoch
    assert pseudo.min() >= -1 - 1e-5 and pseudo.max() <= 1 + 1e-5
    changed = (pseudo - images).abs().flatten(1).amax(dim=1)
    assert (changed > 0.05).all()  # every input has its defect


def test_default_rules_per_method():
    rules = {
        name: (lambda m: m.selection_rule(m.make_config("paper")))(load_method(name))
        for name in ("ygan", "cbigan", "igd", "panda", "ddrid")
    }
    assert rules == {
        "ygan": "last",
        "cbigan": "pseudo",  # measured best of the three on textures (cbigan_selection.md)
        "igd": "last",
        "panda": "val_loss",
        "ddrid": "val_loss",
    }
