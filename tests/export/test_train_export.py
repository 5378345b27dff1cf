"""Training runs, resume, checkpoints, and the exported bundle (parity, pruning, card)."""

import copy
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from adedge.bundle import CARD_NAME, load_bundle, sha256_file
from adedge.errors import CheckpointError, ExportError
from adedge.export import bundle_writer, trace
from adedge.export.bundle_writer import export_bundle
from adedge.export.options import ExportOptions
from adedge.export.parity import parity_check
from adedge.metrics import quantile_threshold
from adedge.runtime.detector import Detector
from adedge.train.checkpoint import load_checkpoint, save_checkpoint
from adedge.train.trainer import TrainOptions, train


def test_run_folder_contents(trained_run):
    for name in ("last.pt", "best.pt", "history.jsonl", "losses.csv", "run.json"):
        assert (trained_run / name).is_file(), name
    history = [
        json.loads(line) for line in (trained_run / "history.jsonl").read_text().splitlines()
    ]
    assert [h["epoch"] for h in history] == [1, 2]
    for key in ("L_rec", "L_adv", "L_s", "L_r", "L_con", "L_bce", "val_loss"):
        assert np.isfinite(history[-1][key])
    header = (trained_run / "losses.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "L_G", "val_loss"} <= set(header)


def test_checkpoint_carries_what_export_needs(trained_run):
    state = load_checkpoint(trained_run / "last.pt", "ygan")
    assert state.config["image_size"] == 32 and state.config["base_channels"] == 8
    assert state.class_names == [str(d) for d in range(1, 10)]
    assert state.input_spec.colour == "gray" and state.input_spec.mean == (0.5,)
    assert state.data_spec == "digits:anomaly=0"
    best = load_checkpoint(trained_run / "best.pt")
    assert state.history[-1]["selection"] == "last"  # Y-GAN's rule: the fixed schedule's end
    assert best.epoch == state.epoch == 2


def test_resume_continues_the_history(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = (run / "history.jsonl").read_text().splitlines()
    options = TrainOptions("ygan", "digits:anomaly=0", run, preset="tiny", epochs=3, resume=True)
    result = train(options, log=lambda _: None)
    after = (run / "history.jsonl").read_text().splitlines()
    assert after[:2] == before and len(after) == 3
    assert result.history[-1]["epoch"] == 3


def test_a_second_run_into_the_same_folder_is_refused(trained_run):
    from adedge.errors import AdedgeError

    with pytest.raises(AdedgeError, match="already holds a training run") as error:
        train(TrainOptions("ygan", "digits:anomaly=0", trained_run, preset="tiny"), log=print)
    assert "--resume" in error.value.one_line()


def test_checkpoint_of_another_method_is_refused(trained_run, tmp_path):
    state = torch.load(trained_run / "last.pt", weights_only=True)
    state["method"] = "cbigan"
    save_checkpoint(tmp_path / "other.pt", state)
    with pytest.raises(CheckpointError, match="cbigan model, not ygan"):
        load_checkpoint(tmp_path / "other.pt", "ygan")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "junk.pt")


def test_bundle_graph_and_card(ygan_bundle, trained_run):
    bundle = load_bundle(ygan_bundle)
    card = bundle.card
    stage = card.stages[0]
    model = onnx.load(str(ygan_bundle / stage.file))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 32, 32]
    assert [o.name for o in model.graph.output] == ["score"]
    assert stage.sha256 == sha256_file(ygan_bundle / stage.file)
    assert card.metrics["parity"]["global"]["max_abs_diff"] <= 1e-4
    assert card.training["checkpoint_sha256"] == sha256_file(trained_run / "best.pt")
    assert "held-out normal" in card.threshold.detail


def test_graph_is_pruned_to_encoder_s_and_classifier(ygan_bundle, trained_run):
    """Parameters in the graph = E_s + C, with BatchNorm folded into conv biases."""
    from adedge.export.trace import rebuild_scorer

    state = load_checkpoint(trained_run / "best.pt")
    scorer = rebuild_scorer(state)
    kept = sum(p.numel() for p in scorer.parameters())
    batchnorms = [m for m in scorer.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    folded = kept - sum(m.num_features for m in batchnorms)  # (γ, β) -> one conv bias each
    graph = trace.graph_parameter_count(ygan_bundle / "global.onnx")
    assert graph == folded
    method_params = sum(v.numel() for k, v in state.model.items() if "running" not in k)
    assert graph < 0.3 * method_params  # E_r, decoder and D_s are gone


def test_threshold_is_the_99th_percentile_of_held_out_normal_scores(ygan_bundle):
    from adedge.data import load

    detector = Detector(ygan_bundle)
    scores, _ = detector.score_images(load("digits:anomaly=0").val.images)
    assert detector.threshold == pytest.approx(quantile_threshold(scores, 0.99), abs=1e-6)


def test_runtime_scores_match_torch_on_raw_images(ygan_bundle, trained_run):
    """The card's preprocessing in the runtime reproduces training's tensors and scores."""
    from adedge.data import load
    from adedge.export.trace import rebuild_scorer
    from adedge.preprocess import prepare_batch

    state = load_checkpoint(trained_run / "best.pt")
    images = load("digits:anomaly=0").test.images[:50]
    with torch.no_grad():
        expected = rebuild_scorer(state)(
            torch.from_numpy(prepare_batch(images, state.input_spec))
        ).numpy()
    scores, _ = Detector(ygan_bundle).score_images(images)
    assert np.abs(scores - expected).max() < 1e-5


def test_parity_rule():
    reference = np.array([0.2, 0.5, 0.9])
    assert parity_check(reference, reference + 5e-5).passed
    assert not parity_check(reference, reference + 5e-4).passed
    assert parity_check(np.array([100.0]), np.array([100.005])).passed  # scaled by |score|


def test_failed_parity_fails_the_export_and_keeps_the_old_bundle(
    trained_run, ygan_bundle, tmp_path, monkeypatch
):
    out = tmp_path / "bundle"
    shutil.copytree(ygan_bundle, out)
    card_before = (out / CARD_NAME).read_text()
    real_trace = trace.trace_to_onnx

    def trace_a_different_model(scorer, spec, path, opset):
        broken = copy.deepcopy(scorer)  # a graph that no longer computes the torch scores
        with torch.no_grad():
            broken.classifier.net[2].bias.add_(0.5 * torch.arange(9.0))
        real_trace(broken, spec, path, opset)

    monkeypatch.setattr(bundle_writer, "trace_to_onnx", trace_a_different_model)
    with pytest.raises(ExportError, match="parity check failed"):
        export_bundle(ExportOptions(trained_run, out), log=lambda _: None)
    assert (out / CARD_NAME).read_text() == card_before
    assert not list(tmp_path.glob(".bundle.*"))


def test_resume_mid_epoch_reproduces_an_uninterrupted_run(tmp_path):
    """Kill a run inside an epoch, resume from last.pt: same weights as never stopping."""

    def options(out, resume=False):
        return TrainOptions(
            "ygan",
            "digits:anomaly=0,limit=320",
            out,
            preset="tiny",
            epochs=2,
            resume=resume,
            checkpoint_minutes=0.0,
            log_seconds=0.0,
            monitor_test=False,
        )

    reference = train(options(tmp_path / "whole"), log=lambda _: None)

    calls = {"n": 0}

    def stop_after_some_steps(line):
        calls["n"] += 1
        if calls["n"] == 17:  # data and plan lines, 10 steps + 1 epoch line, then epoch 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(options(tmp_path / "cut"), log=stop_after_some_steps)
    interrupted = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert interrupted.epoch == 1 and 0 < interrupted.step_in_epoch < 10
    train(options(tmp_path / "cut", resume=True), log=lambda _: None)

    whole = load_checkpoint(reference.last).model
    resumed = load_checkpoint(tmp_path / "cut" / "last.pt").model
    for name, tensor in whole.items():
        assert torch.allclose(tensor.float(), resumed[name].float(), atol=1e-6), name
