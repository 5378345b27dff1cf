"""PANDA-GAN's networks, losses, score and export (tiny preset, real 8x8 digits at 32x32)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from method_harness import (
    MethodHarness,
    assert_batch_independent,
    assert_finite,
    assert_holds_only,
    assert_onnx_parity,
)
from method_harness import digits as digit_batch

from adedge.errors import AdedgeError
from adedge.preprocess import InputSpec
from adedge.train.methods.panda import VGGFeatures, reconstruction_loss, rotation_batch
from adedge.train.methods.panda_score import combine
from adedge.train.nets.fgvc import attention_crop, attention_drop

HARNESS = MethodHarness("panda", classes=9, image_size=32, channels=1)
METHOD, tiny = HARNESS.method, HARNESS.tiny
INFERENCE_PARTS = ("generator.", "critic.", "score_range.")


def digits(n=64, offset=0, split="train"):
    return digit_batch(n, 32, offset=offset, split=split)


def trained(steps=3, **overrides):
    config, model = tiny(**overrides)
    optimizers = METHOD.make_optimizers(model, config)
    images = digits(32)
    METHOD.epoch_start(model, config, 0, lambda batch: iter(images.split(batch)))
    batches = [images[i % 2 :: 2] for i in range(steps)]
    HARNESS.train(model, config, batches, optimizers=optimizers)
    return config, model.eval()


def test_paper_defaults():
    config = METHOD.make_config("paper")
    assert (config.lr, config.critic_lr, config.lr_perceptual) == (7e-6, pytest.approx(1e-5), 1e-4)
    assert config.momentum_perceptual == 0.9 and config.batch_size == 15
    assert config.loss == "pwl" and config.perceptual_weights is None
    assert tuple(config.backbone_blocks) == (3, 4, 6, 3) and config.backbone_bottleneck
    assert config.lambda_rec == config.lambda_adv == config.lambda_z == 1.0
    assert config.lambda_kl == 0.01  # ours: Eq. 1 has no KL term
    assert METHOD.make_config("paper-pl-ps").loss == "pl_ps"
    # --lr scales both Adam rates by the paper's ratio
    assert METHOD.make_config("paper", lr=7e-5).critic_lr == pytest.approx(1e-4)


def test_paper_critic_is_resnet50_with_wsdan_head():
    config = METHOD.make_config("paper", image_size=224, channels=3)
    critic = METHOD.build(config, 1).critic  # ImageNet stem at 224 px
    backbone = sum(p.numel() for p in critic.backbone.parameters())
    assert backbone == 23_508_032  # torchvision's ResNet-50 without its fc layer
    assert critic.backbone.out_channels == 2048
    assert critic.attention[0].out_channels == 32 and critic.filter_bank.out_channels == 10


def test_fgvc_critic_is_bap_filter_bank_and_global_max_pool():
    _, model = tiny()
    critic = model.critic.eval()
    x = digits(4)
    with torch.no_grad():
        features = critic.backbone(x)
        attention = critic.attention(features)
        logit, returned_attention = critic.forward_with_attention(x)
    n, c, h, w = features.shape
    assert attention.shape == (n, 4, h, w) and (attention >= 0).all()
    assert torch.equal(returned_attention, attention)
    parts = torch.einsum("nmhw,nchw->nmc", attention, features) / (h * w)  # BAP
    parts = F.normalize(parts.flatten(1), dim=1).view_as(parts) * (4 * c) ** 0.5
    bank = critic.filter_bank.weight[:, :, 0, 0]  # (K, C_f): 1x1 convolutions
    responses = parts @ bank.T + critic.filter_bank.bias  # (N, M, K)
    expected = responses.amax(dim=1).mean(dim=1)  # GMP over parts, mean over the bank
    assert logit.shape == (4,)
    assert torch.allclose(logit, expected, atol=1e-5)


def test_generator_levels_and_residual_skip():
    config, model = tiny()
    x = digits(3)
    model.eval()
    with torch.no_grad():
        out = model.generator(x)
        direct = model.generator.d0_low(model.generator.d0_high(out.mu_high) + out.mu_low)
    assert out.mu_low.shape == (3, config.latent_low, 8, 8)
    assert out.mu_high.shape == (3, config.latent_high, 4, 4)
    assert out.high_decoded.shape == out.mu_low.shape
    assert out.recon.shape == x.shape and out.recon.abs().max() <= 1
    assert torch.equal(out.recon, direct)  # x' = D0_low(D0_high(z_high) + z_low), means
    with pytest.raises(ValueError, match="multiple of 8"):
        tiny(image_size=36)


def test_each_loss_term_finite_and_reconstruction_improves():
    config, model = tiny(lr=3e-3)
    history = HARNESS.train(model, config, [digits(16)] * 20)
    expected = {"L_rec", "L_adv", "L_z_low", "L_z_high", "L_kl_low", "L_kl_high", "L_G", "L_C"}
    assert expected <= set(history[0])
    assert_finite(history)
    for record in history:
        assert 0 <= record["C_x"] <= 1 and 0 <= record["C_x_prime"] <= 1
    assert np.mean([h["L_rec"] for h in history[-5:]]) < 0.85 * history[0]["L_rec"]


def test_re_encoders_train_but_do_not_reach_the_scorer():
    config, model = tiny()
    optimizers = METHOD.make_optimizers(model, config)
    images = digits(16)
    METHOD.train_step(model, optimizers, images, None, 0.0, config)
    for net in (model.e1_low, model.e1_high):  # L_z gives them gradients
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    model.eval()
    scorer = METHOD.inference_module(model).eval()
    with torch.no_grad():
        before = scorer(images)
        for p in (*model.e1_low.parameters(), *model.e1_high.parameters()):
            p.add_(torch.randn_like(p))
        after = scorer(images)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


@pytest.mark.parametrize("loss", ["pwl", "pl_ps"])
def test_scorer_holds_only_the_inference_subgraph(loss):
    _, model = tiny(loss=loss)
    scorer = METHOD.inference_module(model)
    keys = set(scorer.state_dict())
    assert keys and all(k.startswith(INFERENCE_PARTS) for k in keys)
    assert not any(k.startswith(("e1_", "perceptual")) for k in keys)
    if loss == "pl_ps":
        assert model.perceptual is not None
    pruned = () if model.perceptual is None else (model.perceptual,)
    assert_holds_only(scorer, kept=(model.generator, model.critic), pruned=pruned)


@pytest.mark.parametrize("score", ["eq3", "eq3_fake", "recon"])
@pytest.mark.parametrize("rec_norm", ["l2", "mse"])
def test_score_variants_with_pixel_error_map_and_batch_independent(score, rec_norm):
    _, model = trained(score=score, rec_norm=rec_norm)
    scorer = METHOD.inference_module(model).eval()
    x = digits(8, offset=100)
    with torch.no_grad():
        score_out, amap = scorer(x)
        recon = model.generator(x).recon
        c_real = torch.sigmoid(model.critic(x))
        c_fake = torch.sigmoid(model.critic(recon))
    expected_map = (x - recon).pow(2).mean(dim=1, keepdim=True)
    assert amap.shape == (8, 1, 32, 32) and amap.dtype == torch.float32
    assert torch.allclose(amap, expected_map, atol=1e-6)
    if rec_norm == "l2":  # Eq. 1's ||x - x'||_2 per image
        rec = torch.linalg.vector_norm((x - recon).flatten(1), dim=1)
    else:
        rec = expected_map.mean(dim=(1, 2, 3))
    expected = {
        "eq3": rec + c_real + c_fake,  # as printed, C = P(real)
        "eq3_fake": rec + (1 - c_real) + (1 - c_fake),  # the critic's P(fake)
        "recon": rec,
    }[score]
    # identity constants before prepare_export: score = raw Eq. 3 numerator
    assert torch.allclose(score_out, expected, atol=1e-5)
    assert (scorer.critic is None) == (score == "recon")
    assert_batch_independent(scorer, x, atol=1e-5)


def test_eq3_fake_adds_the_complements_hand_checked():
    rec = torch.tensor([0.5, 2.0])
    c_real, c_fake = torch.tensor([0.9, 0.25]), torch.tensor([0.2, 0.5])
    assert torch.allclose(combine(rec, c_real, c_fake, "eq3_fake"), torch.tensor([1.4, 3.25]))
    assert torch.allclose(combine(rec, c_real, c_fake, "eq3"), torch.tensor([1.6, 2.75]))
    assert torch.equal(combine(rec, None, None, "recon"), rec)
    with pytest.raises(ValueError, match="critic"):
        combine(rec, None, None, "eq3")


def test_defaults_and_old_checkpoints_keep_their_score():
    config = METHOD.make_config("paper")
    assert (config.score, config.rec_norm, config.skip) == ("eq3_fake", "l2", True)
    assert METHOD.selection_rule(config) == "val_loss"  # PANDA keeps its rule
    saved = METHOD.config_to_dict(METHOD.make_config("tiny"))
    for key in ("score", "rec_norm", "skip", "selection"):
        saved.pop(key)
    old = METHOD.config_from_dict(saved)  # trained and scored before the options existed
    assert (old.score, old.rec_norm, old.skip) == ("eq3", "mse", True)
    with pytest.raises(ValueError, match="unknown PANDA score"):
        METHOD.make_config("tiny", score="eq4")
    with pytest.raises(ValueError, match="rec_norm"):
        METHOD.make_config("tiny", rec_norm="l1")


def test_no_skip_control_decodes_without_z_low():
    config, model = tiny(skip=False)
    assert config.skip is False and not model.generator.skip
    x = digits(3)
    model.eval()
    with torch.no_grad():
        out = model.generator(x)
        direct = model.generator.d0_low(model.generator.d0_high(out.mu_high))
    assert torch.equal(out.recon, direct)  # x' = D0_low(D0_high(z_high)): no residual
    optimizers = METHOD.make_optimizers(model, config)
    record = METHOD.train_step(model.train(), optimizers, digits(16), None, 0.0, config)
    assert all(np.isfinite(v) for v in record.values())


def test_reconstruction_loss_is_the_eq1_norm():
    config, model = tiny()
    x = digits(4)
    recon = torch.zeros_like(x)
    expected = torch.linalg.vector_norm(x.flatten(1), dim=1).mean()
    assert torch.allclose(reconstruction_loss(model, x, recon, config), expected, atol=1e-5)
    mse_config, _ = tiny(rec_norm="mse")
    assert torch.allclose(reconstruction_loss(model, x, recon, mse_config), x.pow(2).mean())


def test_min_max_constants_come_from_calibration_data():
    config, model = trained()
    scorer = METHOD.inference_module(model).eval()
    calibration, other = digits(60, split="val"), digits(40, offset=200)
    with torch.no_grad():
        raw_cal, raw_other = scorer(calibration)[0], scorer(other)[0]
    facts = METHOD.prepare_export(model, config, calibration)
    assert facts["score_min"] == pytest.approx(float(raw_cal.min()), abs=1e-6)
    assert facts["score_max"] == pytest.approx(float(raw_cal.max()), abs=1e-6)
    assert facts["calibration_images"] == 60
    with torch.no_grad():
        cal, out = scorer(calibration)[0], scorer(other)[0]
    assert cal.min() >= -1e-6 and cal.max() <= 1 + 1e-6
    assert float(cal.min()) == pytest.approx(0, abs=1e-6)
    assert float(cal.max()) == pytest.approx(1, abs=1e-6)
    span = facts["score_max"] - facts["score_min"]
    assert torch.allclose(out, (raw_other - facts["score_min"]) / span, atol=1e-5)
    # another calibration set gives other constants
    facts_other = METHOD.prepare_export(model, config, other)
    assert facts_other["score_min"] != pytest.approx(facts["score_min"], abs=1e-9)


@pytest.mark.parametrize(
    "overrides",
    [
        {"loss": "pl_ps", "pretext_epochs": 1},  # default score eq3_fake
        {"score": "eq3"},
        {"score": "recon", "rec_norm": "mse"},
    ],
)
def test_onnx_export_parity_applies_constants_and_prunes(tmp_path, overrides):
    config, model = trained(**overrides)
    calibration = digits(40, split="val")
    facts = METHOD.prepare_export(model, config, calibration)
    assert (facts["score_variant"], facts["rec_norm"]) == (config.score, config.rec_norm)
    assert set(facts["terms"]) == {f"recon_{config.rec_norm}", "C_x", "C_x_prime"}
    scorer = METHOD.inference_module(model).eval()
    path = tmp_path / "panda.onnx"
    batches = (calibration[:1], calibration)
    parity = assert_onnx_parity(scorer, InputSpec(32, 32, "gray"), path, batches, amap_atol=1e-5)
    names = [t.name for t in parity.graph.initializer]
    assert not any(("e1_" in n) or ("perceptual" in n) for n in names)
    assert any("critic" in n for n in names) == (config.score != "recon")
    assert parity.score.min() >= -1e-4 and parity.score.max() <= 1 + 1e-4  # constants in graph


def _pretext_inputs(n=256):
    images = digits(n)
    return lambda batch: iter(images.split(batch))


def test_pl_ps_pretext_learns_rotations_then_freezes():
    config, model = tiny(loss="pl_ps", pretext_epochs=3, batch_size=16)
    optimizers = METHOD.make_optimizers(model, config)
    images = digits(16)
    with pytest.raises(RuntimeError, match="pretext"):
        METHOD.train_step(model, optimizers, images, None, 0.0, config)
    METHOD.epoch_start(model, config, 0, _pretext_inputs())
    history = model.pretext_history
    assert len(history) == 3
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["accuracy"] > 0.38  # 4-way rotation prediction: chance is 0.25
    assert float(model.perceptual.pretext_accuracy) == history[-1]["accuracy"]
    frozen = {k: v.clone() for k, v in model.perceptual.state_dict().items()}
    METHOD.epoch_start(model, config, 1, _pretext_inputs())  # runs once only
    record = METHOD.train_step(model, optimizers, images, None, 0.0, config)
    assert all(np.isfinite(v) for v in record.values())
    for key, value in model.perceptual.state_dict().items():
        assert torch.equal(value, frozen[key])  # a fixed loss network during the GAN
    with torch.no_grad():
        recon = model.generator(images).recon
        features = model.perceptual(images)
    assert features.shape == (16, 4 * config.perceptual_width, 8, 8)  # after two max-pools
    assert recon.shape == images.shape


def test_rotation_batch_labels():
    x = torch.arange(8.0).view(2, 1, 2, 2)
    rotated, labels = rotation_batch(x)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(rotated[:2], x)
    assert torch.equal(rotated[4:6], x.flip(2).flip(3))  # 180°


def test_pl_g_needs_a_local_vgg19_state_dict(tmp_path):
    with pytest.raises(AdedgeError, match="perceptual_weights is not set"):
        tiny(loss="pl_g")
    with pytest.raises(AdedgeError, match="does not exist"):
        tiny(loss="pl_g", perceptual_weights=str(tmp_path / "missing.pth"))
    torch.manual_seed(1)
    source = VGGFeatures(3, 64, imagenet=True)
    state = {f"features.{k}": v for k, v in source.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # the rest of a full VGG-19 is ignored
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(AdedgeError, match="lacks VGG-19 tensors"):
        tiny(loss="pl_g", perceptual_weights=str(bad))
    config, model = tiny(loss="pl_g", perceptual_weights=str(path))
    for key, value in source.features.state_dict().items():
        assert torch.equal(model.perceptual.features.state_dict()[key], value)
    x = digits(2)
    with torch.no_grad():
        rgb = (x * 0.5 + 0.5).expand(-1, 3, -1, -1)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        assert torch.allclose(model.perceptual(x), source.features((rgb - mean) / std))


def test_attention_crop_and_drop():
    ramp = torch.linspace(-1, 1, 16).view(1, 1, 1, 16).expand(2, 1, 16, 16).contiguous()
    uniform = torch.ones(2, 3, 4, 4)
    assert torch.allclose(attention_crop(ramp, uniform, 0.5), ramp, atol=1e-6)  # whole image
    peak = torch.zeros(2, 1, 4, 4)
    peak[:, 0, 1:3, 3] = 1.0  # attention on the right-hand column
    cropped = attention_crop(ramp, peak, 0.5)
    assert cropped.shape == ramp.shape and cropped.min() > 0.3  # only the right side, zoomed
    dropped = attention_drop(ramp, peak, 0.5)
    assert (dropped[:, :, :, :8] == ramp[:, :, :, :8]).all()  # far from the peak: untouched
    assert (dropped == 0).sum() > 0 and (dropped[:, :, 6:10, 14:] == 0).all()
    config, model = tiny(attention_augment=True)
    optimizers = METHOD.make_optimizers(model, config)
    record = METHOD.train_step(model, optimizers, digits(16), None, 0.0, config)
    for key in ("L_C", "L_C_crop", "L_C_drop", "L_C_total"):
        assert np.isfinite(record[key])
    expected = (record["L_C"] + record["L_C_crop"] + record["L_C_drop"]) / 3
    assert record["L_C_total"] == pytest.approx(expected, rel=1e-5)
