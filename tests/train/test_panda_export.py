"""A PANDA run's score variant travels from the config to the exported bundle: the card
records it (training config and export facts) and the runtime scores with it."""

import numpy as np
import pytest
import torch

from adedge.bundle import load_bundle
from adedge.data import load
from adedge.export.bundle_writer import export_bundle
from adedge.export.options import ExportOptions
from adedge.export.trace import rebuild_scorer
from adedge.preprocess import prepare_batch
from adedge.runtime.detector import Detector
from adedge.train.checkpoint import load_checkpoint
from adedge.train.trainer import TrainOptions, train

DATA = "digits:anomaly=0,limit=64"


@pytest.mark.parametrize("score", ["recon"])
def test_the_score_variant_is_carried_to_the_card_and_the_graph(tmp_path, score):
    run = tmp_path / "run"
    options = TrainOptions(
        "panda",
        DATA,
        run,
        preset="tiny",
        image_size=32,
        overrides={"score": score, "skip": "false"},
        monitor_test=False,
    )
    train(options, log=lambda _: None)
    bundle = export_bundle(ExportOptions(run, tmp_path / "bundle"), log=lambda _: None)
    card = load_bundle(bundle).card
    assert card.training["config"]["score"] == score
    assert card.training["config"]["skip"] is False
    assert card.training["export"]["score_variant"] == score
    frames = load(DATA).test.images[:5]
    state = load_checkpoint(run / "best.pt")
    with torch.no_grad():
        expected = rebuild_scorer(state)(torch.from_numpy(prepare_batch(frames, state.input_spec)))[
            0
        ].numpy()
    expected = (expected - card.training["export"]["score_min"]) / (
        card.training["export"]["score_max"] - card.training["export"]["score_min"]
    )
    scores = Detector(bundle).score_images_with_maps(frames)[0]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
