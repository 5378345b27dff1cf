"""DDR-ID: Table 1 networks, the two training phases, Algorithm 2, preprocessing, export."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from method_harness import (
    MethodHarness,
    assert_batch_independent,
    assert_finite,
    assert_holds_only,
    assert_scores_close,
)
from torch import nn

from adedge.bundle import GraphFile, StageSpec
from adedge.data import load
from adedge.errors import ExportError
from adedge.export.trace import INPUT_NAME, trace_to_onnx
from adedge.preprocess import InputSpec, prepare_batch, resize, to_colour
from adedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from adedge.train.methods.ddrid import (
    LatentScorer,
    ReconstructionScorer,
    choose_score,
    phase_lr,
    pretrain_epochs,
    squared_norm,
)

HARNESS = MethodHarness("ddrid")
METHOD, tiny = HARNESS.method, HARNESS.tiny
SPEC = InputSpec(32, 32, "gray", (0.5,), (0.5,))
PRUNED = ("encoder_n", "decoder_n", "latent_discriminator")


@pytest.fixture(scope="module")
def digits():
    data = load("digits:anomaly=0")
    return {
        "raw": data.train.images[:128],
        "train": torch.from_numpy(prepare_batch(data.train.images[:128], SPEC)),
        "val": torch.from_numpy(prepare_batch(data.val.images, SPEC)),
    }


def inputs_of(images: torch.Tensor):
    return lambda batch: iter(images.split(batch))


def run_steps(model, optimizers, config, images, steps, progress=0.0, batch=32):
    starts = [(i * batch) % len(images) for i in range(steps)]
    batches = [images[start : start + batch] for start in starts]
    return HARNESS.train(model, config, batches, progress=progress, optimizers=optimizers)


def recon_errors(model, images):
    """Per-network and summed reconstruction errors (squared norms) in eval mode."""
    model.eval()
    with torch.no_grad():
        x = model.preprocess(images)
        _, x_c, x_n = model.decompose(x)
        r_c = model.decoder_c(model.encoder_c(x))
        return {
            "C": float(squared_norm(r_c - x).mean()),
            "N": float(squared_norm(model.decoder_n(model.encoder_n(x)) - x).mean()),
            "sum": float(squared_norm(x_c + x_n - x).mean()),
        }


@pytest.fixture(scope="module")
def finetuned(digits):
    """Tiny DDR-ID: min-max fitted, pretrained, Z_C fixed, a few finetuning steps."""
    config, model = tiny()
    optimizers = METHOD.make_optimizers(model, config)
    inputs = inputs_of(digits["train"])
    METHOD.epoch_start(model, config, 0, inputs)
    initial = recon_errors(model, digits["train"])
    pre = run_steps(model, optimizers, config, digits["train"], 60)
    METHOD.epoch_start(model, config, pretrain_epochs(config), inputs)
    center = model.center.clone()
    start_ft = recon_errors(model, digits["train"])  # eval mode, refreshed BatchNorm stats
    fine = run_steps(model, optimizers, config, digits["train"], 40, progress=0.5)
    return {
        "config": config,
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "pre": pre,
        "fine": fine,
        "initial": initial,
        "start_ft": start_ft,
        "end_ft": recon_errors(model, digits["train"]),
        "center": center,
        "optimizers": optimizers,
        "model": model,
    }


def fresh_copy(finetuned):
    config = finetuned["config"]
    model = METHOD.build(config, 1)
    model.load_state_dict(finetuned["state"])
    return config, model.eval()


def test_paper_defaults_and_schedule():
    config = METHOD.make_config("paper")
    assert (config.batch_size, config.weight_decay, config.lr) == (256, 1e-6, 1e-4)
    assert config.epochs == 250 and pretrain_epochs(config) == 150
    # Deep SVDD's two-phase schedule in both phases: 1e-4, then 1e-5 after 50 epochs
    lr_at = {e: phase_lr(config, e / 250, finetuning=e >= 150) for e in (0, 49, 50, 149)}
    lr_at.update({e: phase_lr(config, e / 250, finetuning=True) for e in (150, 199, 200, 249)})
    assert lr_at == pytest.approx(
        {0: 1e-4, 49: 1e-4, 50: 1e-5, 149: 1e-5, 150: 1e-4, 199: 1e-4, 200: 1e-5, 249: 1e-5}
    )
    # any --epochs keeps at least one finetuning epoch
    assert pretrain_epochs(METHOD.make_config("paper", epochs=1)) == 0
    assert pretrain_epochs(METHOD.make_config("paper", epochs=2)) == 1


@pytest.mark.parametrize(
    "size, channels, latent, first_fc", [(28, 1, 128, 64), (32, 1, 128, 64), (32, 3, 512, 128)]
)
def test_table1_networks(size, channels, latent, first_fc):
    config = METHOD.make_config("paper", image_size=size, channels=channels)
    model = METHOD.build(config, 1)
    convs = [m for m in model.encoder_c.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (w, (4, 4), (2, 2)) for w in (64, 128, 256, 512)
    ]
    assert not isinstance(model.encoder_c.features[1], nn.BatchNorm2d)  # no BN after conv 1
    assert model.encoder_c.head.out_features == latent
    # bias-free encoder, non-affine BatchNorm (Deep SVDD Prop. 2)
    assert all(name.endswith("weight") for name, _ in model.encoder_c.named_parameters())
    deconvs = [m for m in model.decoder_c.net if isinstance(m, nn.ConvTranspose2d)]
    assert [(d.out_channels, d.stride) for d in deconvs] == [
        (512, (1, 1)),
        (256, (2, 2)),
        (128, (2, 2)),
        (64, (2, 2)),
    ]
    x = torch.randn(2, channels, size, size)
    assert model.decoder_c(model.encoder_c(x)).shape == x.shape
    assert model.decoder_n(model.encoder_n(x)).shape == x.shape
    linears = [m for m in model.latent_discriminator.net if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [first_fc, 32, 16, 1]


def numpy_gcn_minmax(raw: list[np.ndarray], low: float, high: float) -> np.ndarray:
    """Deep SVDD's preprocessing on uint8 pixels: x/255, GCN (L1), (g - min)/(max - min)."""
    out = []
    for image in raw:
        x = resize(to_colour(image, "gray"), 32, 32).transpose(2, 0, 1).astype(np.float64) / 255
        centred = x - x.mean()
        g = centred / np.abs(centred).mean()
        out.append((g - low) / (high - low))
    return np.stack(out)


def test_preprocessing_in_the_graph_equals_training_normalisation(digits, tmp_path):
    """The runtime's (x/255-0.5)/0.5 input + in-graph GCN-L1 + min-max == Deep SVDD's numpy."""
    config, model = tiny()
    METHOD.epoch_start(model, config, 0, inputs_of(digits["train"]))
    low, high = float(model.preprocess.low), float(model.preprocess.high)
    # min-max constants: the extremes of the GCN'd training images
    g = numpy_gcn_minmax(digits["raw"], 0.0, 1.0)
    assert (low, high) == pytest.approx((g.min(), g.max()), abs=1e-5)
    path = tmp_path / "pre.onnx"
    torch.onnx.export(
        model.preprocess.eval(),
        (digits["train"][:2],),
        str(path),
        input_names=["image"],
        dynamic_axes={"image": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runtime_input = prepare_batch(digits["raw"], SPEC)  # what the stream feeds the graph
    in_graph = session.run(None, {"image": runtime_input})[0]
    reference = numpy_gcn_minmax(digits["raw"], low, high)
    assert np.abs(in_graph - reference).max() < 1e-5
    assert reference.min() == pytest.approx(0.0, abs=1e-6)
    assert reference.max() == pytest.approx(1.0, abs=1e-6)
    # and the exported scorer on runtime input == E_C on Deep SVDD's numpy preprocessing
    model.eval()
    scorer = METHOD.inference_module(model).eval()
    onnx_path = tmp_path / "score.onnx"
    trace_to_onnx(scorer, SPEC, onnx_path, 17)
    backend = OnnxRuntimeBackend(
        onnx_path, StageSpec("global", {"fp32": GraphFile(onnx_path.name, "")}, INPUT_NAME, SPEC)
    )
    with torch.no_grad():
        z = model.encoder_c(torch.from_numpy(reference.astype(np.float32)))
        expected = (z - model.center).pow(2).mean(1).numpy()
    assert np.abs(backend.run(runtime_input)["score"] - expected).max() < 1e-4 * max(
        1.0, np.abs(expected).max()
    )


def test_a_blank_frame_scores_finite(digits):
    config, model = tiny()
    METHOD.epoch_start(model, config, 0, inputs_of(digits["train"]))
    scorer = METHOD.inference_module(model.eval()).eval()
    with torch.no_grad():
        scores = scorer(torch.full((2, 1, 32, 32), 0.3))
    assert torch.isfinite(scores).all()


def test_training_needs_the_fitted_preprocessing(digits):
    config, model = tiny()
    optimizers = METHOD.make_optimizers(model, config)
    with pytest.raises(RuntimeError, match="epoch_start"):
        METHOD.train_step(model, optimizers, digits["train"][:32], None, 0.0, config)


def test_pretraining_reduces_reconstruction_error(finetuned):
    pre = finetuned["pre"]
    assert all(r["phase"] == 0.0 for r in pre)
    for key in ("L_AE_C", "L_AE_N"):
        first = np.mean([r[key] for r in pre[:5]])
        last = np.mean([r[key] for r in pre[-5:]])
        assert last < 0.6 * first, key
    # in eval mode (the refreshed running statistics): both networks reconstruct X alone
    before, after = finetuned["initial"], finetuned["start_ft"]
    assert after["C"] < 0.2 * before["C"] and after["N"] < 0.2 * before["N"]
    assert after["C"] == pytest.approx(np.mean([r["L_AE_C"] for r in pre[-4:]]), rel=0.3)


def test_pretraining_leaves_the_latent_discriminator_and_centre_alone(digits):
    config, model = tiny()
    optimizers = METHOD.make_optimizers(model, config)
    METHOD.epoch_start(model, config, 0, inputs_of(digits["train"]))
    before = {k: v.clone() for k, v in model.latent_discriminator.state_dict().items()}
    run_steps(model, optimizers, config, digits["train"], 3)
    after = model.latent_discriminator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not bool(model.center_fixed) and torch.equal(model.center, torch.zeros(16))
    assert METHOD.validation_loss(model.eval(), digits["val"], None) == float("inf")


def test_centre_is_the_mean_latent_and_stays_frozen(finetuned, digits):
    model, config = finetuned["model"], finetuned["config"]
    assert bool(model.center_fixed)
    assert all(r["phase"] == 1.0 for r in finetuned["fine"])
    # Z_C was fixed before finetuning and not one finetuning step moved it
    assert torch.equal(model.center, finetuned["center"])
    assert not model.center.requires_grad
    optimised = {
        id(p)
        for opt in finetuned["optimizers"].values()
        for g in opt.param_groups
        for p in g["params"]
    }
    assert id(model.center) not in optimised
    # a later epoch_start does not recompute it
    METHOD.epoch_start(model, config, config.epochs - 1, inputs_of(digits["train"] * 0.5))
    assert torch.equal(model.center, finetuned["center"])
    # Z_C = mean E_C latent over all training inputs, running BatchNorm statistics
    config2, fresh = tiny()
    fresh.load_state_dict(finetuned["state"])
    fresh.center_fixed.fill_(False)
    fresh.train()
    METHOD.epoch_start(fresh, config2, pretrain_epochs(config2), inputs_of(digits["train"]))
    assert fresh.training  # the hook restores the training mode it found
    fresh.eval()
    with torch.no_grad():
        manual = fresh.encoder_c(fresh.preprocess(digits["train"])).mean(0)
    assert torch.allclose(fresh.center, manual, atol=1e-5)


def test_finetuning_trains_the_latent_game_with_its_own_optimiser(finetuned, digits):
    config, model = fresh_copy(finetuned)
    optimizers = METHOD.make_optimizers(model, config)
    model.finetune_started.fill_(False)
    disc = [p.clone() for p in model.latent_discriminator.parameters()]
    enc = [p.clone() for p in model.encoder_c.parameters()]
    model.train()
    record = METHOD.train_step(model, optimizers, digits["train"][:32], None, 0.5, config)
    assert {"L_OC", "L_LSC", "L_LSC_E", "L_R", "L_G"} <= set(record)
    assert record["L_G"] == pytest.approx(
        record["L_OC"] + record["L_LSC_E"] + record["L_R"], rel=1e-5
    )
    assert record["L_LSC"] <= 0.0  # E log D + E log(1 - D)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(disc, model.latent_discriminator.parameters(), strict=True)
    )
    assert any(
        not torch.equal(a, b) for a, b in zip(enc, model.encoder_c.parameters(), strict=True)
    )
    # Adam restarted at the first finetuning step (Deep SVDD: separate optimisers per phase)
    steps = {int(s["step"]) for s in optimizers["reconstruction"].state.values()}
    assert steps == {1}


def test_sum_of_components_reconstructs_the_image(finetuned):
    start, end = finetuned["start_ft"], finetuned["end_ft"]
    # right after pretraining both nets return ~X, so X_C + X_N ~ 2X; finetuning fixes it
    assert end["sum"] < 0.5 * start["sum"]
    assert end["sum"] < end["C"]  # the sum reconstructs X better than X_C alone
    fine = finetuned["fine"]
    assert np.mean([r["L_R"] for r in fine[-5:]]) < 0.5 * np.mean([r["L_R"] for r in fine[:5]])
    assert_finite(fine)


def test_validation_loss_is_oc_plus_reconstruction(finetuned, digits):
    config, model = fresh_copy(finetuned)
    with torch.no_grad():
        x = model.preprocess(digits["val"])
        z, x_c, x_n = model.decompose(x)
        expected = float((squared_norm(z - model.center) + squared_norm(x_c + x_n - x)).mean())
    assert METHOD.validation_loss(model, digits["val"], None) == pytest.approx(expected, rel=1e-4)


def test_algorithm2_picks_the_score_with_the_lower_validation_mean(finetuned, digits):
    assert choose_score(1.0, 2.0) == "AS_l"
    assert choose_score(2.0, 1.0) == "AS_r"
    assert choose_score(1.0, 1.0) == "AS_r"  # "otherwise"
    config, model = fresh_copy(finetuned)
    assert isinstance(METHOD.inference_module(model), LatentScorer)  # default before export
    facts = METHOD.prepare_export(model, config, digits["val"])
    with torch.no_grad():
        x = model.preprocess(digits["val"])
        z = model.encoder_c(x)
        template = model.decoder_c(model.center[None])
        as_l = squared_norm(z - model.center).mean()
        as_r = squared_norm(model.decoder_c(z) - template).mean()
    assert facts["val_mean_AS_l"] == pytest.approx(float(as_l), rel=1e-4)
    assert facts["val_mean_AS_r"] == pytest.approx(float(as_r), rel=1e-4)
    assert facts["score"] == ("AS_l" if as_l < as_r else "AS_r")
    json.dumps(facts)  # goes into the card
    # push AS_l up: Z_C far away -> the rule switches to AS_r
    far = model.center.clone()
    model.center.add_(100.0)
    facts = METHOD.prepare_export(model, config, digits["val"])
    assert facts["score"] == "AS_r" and facts["val_mean_AS_l"] > facts["val_mean_AS_r"]
    assert isinstance(METHOD.inference_module(model), ReconstructionScorer)
    # push AS_r up: a saturated decoder output makes R_C(x) far from D_C(Z_C)
    model.center.copy_(far)
    model.decoder_c.net[-2].weight.data.mul_(1e3)
    facts = METHOD.prepare_export(model, config, digits["val"])
    assert facts["score"] == "AS_l" and facts["val_mean_AS_l"] < facts["val_mean_AS_r"]
    assert isinstance(METHOD.inference_module(model), LatentScorer)
    assert facts["minmax"] == [float(model.preprocess.low), float(model.preprocess.high)]


def test_export_refuses_a_pretraining_checkpoint(digits):
    config, model = tiny()
    METHOD.epoch_start(model, config, 0, inputs_of(digits["train"]))
    with pytest.raises(ExportError, match="pretraining phase"):
        METHOD.prepare_export(model.eval(), config, digits["val"])


def initializers(path):
    graph = onnx.load(str(path)).graph
    return {t.name: int(np.prod(t.dims)) for t in graph.initializer}


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("choice", ["AS_l", "AS_r"])
def test_exported_scorer_matches_torch_and_is_pruned(finetuned, digits, tmp_path, choice):
    config, model = fresh_copy(finetuned)
    model.score_choice.fill_(("AS_l", "AS_r").index(choice))
    scorer = METHOD.inference_module(model).eval()
    keys = set(scorer.state_dict())
    kept = {
        "AS_l": ("preprocess.", "encoder.", "center"),
        "AS_r": ("preprocess.", "encoder.", "decoder.", "template"),
    }[choice]
    assert all(k.startswith(kept) for k in keys)
    pruned = PRUNED + (("decoder_c",) if choice == "AS_l" else ())
    assert_holds_only(scorer, kept=None, pruned=[getattr(model, name) for name in pruned])
    path = tmp_path / f"{choice}.onnx"
    trace_to_onnx(scorer, SPEC, path, 17)
    weights = initializers(path)
    assert not any(p in name for name in weights for p in PRUNED)
    e_c, d_c = count(model.encoder_c), count(model.decoder_c)
    folded = 16 + sum(
        m.num_features for m in model.encoder_c.modules() if isinstance(m, nn.BatchNorm2d)
    )
    total = sum(weights.values())
    if choice == "AS_l":  # E_C, folded BatchNorm biases, Z_C, min-max constants
        assert e_c <= total <= e_c + folded + 8
    else:  # + D_C and the 32x32 template D_C(Z_C); still no R_N or D_L
        assert e_c + d_c - 2 * 64 <= total <= e_c + d_c + folded + 2 * 64 + 32 * 32 + 8
    stage = StageSpec("global", {"fp32": GraphFile(path.name, "")}, INPUT_NAME, SPEC)
    backend = OnnxRuntimeBackend(path, stage)
    images = digits["val"][:64]
    with torch.no_grad():
        torch_scores = scorer(images).numpy()
    onnx_scores = backend.run(images.numpy())["score"]
    assert onnx_scores.shape == (64,)
    assert_scores_close(onnx_scores, torch_scores)
    assert_batch_independent(scorer, images, 4, atol=1e-7)
    assert (torch_scores >= 0).all()


def test_epochs_one_finetunes_from_the_start(digits):
    config, model = tiny(epochs=1)
    METHOD.epoch_start(model, config, 0, inputs_of(digits["train"]))
    assert bool(model.preprocess.fitted) and bool(model.center_fixed)
    optimizers = METHOD.make_optimizers(model, config)
    record = run_steps(model, optimizers, config, digits["train"], 1)[0]
    assert record["phase"] == 1.0


def find_facts(card: dict) -> dict:
    """The prepare_export facts wherever the card keeps them (training.export...)."""
    stack = [card]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "val_mean_AS_l" in item:
                return item
            stack.extend(item.values())
    raise AssertionError("no DDR-ID export facts in the card")


def test_trainer_and_export_end_to_end(tmp_path):
    """Generic trainer + exporter: pretraining epochs are never 'best'; the card says why."""
    from adedge.export.bundle_writer import export_bundle
    from adedge.export.options import ExportOptions
    from adedge.train.checkpoint import load_checkpoint
    from adedge.train.trainer import TrainOptions, train

    run = tmp_path / "run"
    options = TrainOptions("ddrid", "digits:anomaly=0", run, preset="tiny", epochs=2)
    history = train(options, log=lambda _: None).history
    assert history[0]["phase"] == 0.0 and history[0]["val_loss"] == float("inf")
    assert history[1]["phase"] == 1.0 and np.isfinite(history[1]["val_loss"])
    best = load_checkpoint(run / "best.pt", "ddrid")
    assert best.epoch == 2 and bool(best.model["center_fixed"])
    out = export_bundle(ExportOptions(run, tmp_path / "bundle"), log=lambda _: None)
    card = json.loads((out / "adedge.json").read_text())
    facts = find_facts(card)
    assert facts["score"] == choose_score(facts["val_mean_AS_l"], facts["val_mean_AS_r"])
    assert facts["preprocessing"].startswith("GCN-L1 + min-max")
    model = onnx.load(str(out / "global.onnx"))
    assert not any(p in t.name for t in model.graph.initializer for p in PRUNED)
