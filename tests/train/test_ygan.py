"""Y-GAN's networks, losses and score (tiny preset)."""

import numpy as np
import pytest
import torch
from method_harness import (
    MethodHarness,
    assert_batch_independent,
    assert_finite,
    assert_holds_only,
    digit_labels,
    digits,
)

from adedge.train.methods.ygan import mean_pairwise_cosine
from adedge.train.nets.dcgan import dann_ramp, reverse_gradient

HARNESS = MethodHarness("ygan", classes=9)  # the nine normal digits are Y-GAN's sub-classes
METHOD, tiny = HARNESS.method, HARNESS.tiny


def real_batch(n=64):
    return digits(n), digit_labels(n)


def test_paper_defaults():
    config = METHOD.make_config("paper")
    assert (config.latent_dim, config.classifier_hidden) == (100, 30)
    assert config.lambda_rec == config.lambda_con == 50
    assert config.lambda_adv == config.lambda_s == config.lambda_r == config.lambda_bce == 1
    assert (config.lr, config.beta1, config.beta2) == (2e-4, 0.5, 0.999)


@pytest.mark.parametrize("size, blocks", [(32, 3), (64, 4), (256, 6)])
def test_dcgan_shapes_for_each_input_size(size, blocks):
    config, model = tiny(image_size=size, channels=3)
    x = torch.randn(2, 3, size, size)
    assert model.encoder_s(x).shape == (2, config.latent_dim)
    assert model.decoder(torch.randn(2, 2 * config.latent_dim)).shape == x.shape
    strided = [m for m in model.encoder_s.pyramid if isinstance(m, torch.nn.Conv2d)]
    assert len(strided) == blocks
    assert model.discriminator.features(x).shape[-2:] == (4, 4)


def test_losses_finite_and_decreasing():
    config, model = tiny()
    images, labels = real_batch()
    history = HARNESS.train(model, config, [images] * 40, labels=labels)
    assert_finite(history)
    first = np.mean([h["L_G"] for h in history[:5]])
    last = np.mean([h["L_G"] for h in history[-5:]])
    assert last < 0.8 * first
    assert np.mean([h["L_rec"] for h in history[-5:]]) < np.mean([h["L_rec"] for h in history[:5]])


def test_gradient_reversal_and_dann_ramp():
    x = torch.ones(3, requires_grad=True)
    reverse_gradient(x, 0.7).sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), -0.7))
    assert dann_ramp(0.0) == 0.0
    assert dann_ramp(1.0) == pytest.approx(0.9999, abs=1e-3)
    assert dann_ramp(0.25) < dann_ramp(0.5) < dann_ramp(0.75)


def test_residual_encoder_receives_reversed_classifier_gradient():
    """L_r trains C to classify z_r and E_r to defeat it: E_r's gradient is reversed, C's not."""
    _, model = tiny()
    images, labels = real_batch()
    z_r = model.encoder_r(images)
    weight = model.classifier.net[0].weight
    cross_entropy = torch.nn.functional.cross_entropy
    reversed_loss = cross_entropy(model.classifier(reverse_gradient(z_r, 1.0)), labels)
    plain_loss = cross_entropy(model.classifier(z_r), labels)
    grad_z_rev, grad_w_rev = torch.autograd.grad(reversed_loss, (z_r, weight), retain_graph=True)
    grad_z, grad_w = torch.autograd.grad(plain_loss, (z_r, weight))
    assert grad_z.abs().sum() > 0
    assert torch.allclose(grad_z_rev, -grad_z, atol=1e-7)
    assert torch.allclose(grad_w_rev, grad_w, atol=1e-7)


def test_score_is_one_minus_max_softmax_and_batch_independent():
    config, model = tiny()
    images, labels = real_batch()
    HARNESS.train(model, config, [images] * 5, labels=labels)
    model.eval()
    scorer = METHOD.inference_module(model).eval()
    with torch.no_grad():
        scores = scorer(images)
        probs = torch.softmax(model.classifier(model.encoder_s(images)), 1)
    assert torch.allclose(scores, 1 - probs.max(1).values)
    assert ((scores >= 0) & (scores <= 1 - 1 / 9 + 1e-6)).all()
    assert_batch_independent(scorer, images, 8, atol=1e-6)


def test_inference_module_holds_only_encoder_s_and_classifier():
    _, model = tiny()
    assert_holds_only(
        METHOD.inference_module(model),
        kept=(model.encoder_s, model.classifier),
        pruned=(model.encoder_r, model.decoder, model.discriminator),
    )


def test_single_class_is_refused():
    with pytest.raises(ValueError, match="two normal sub-classes"):
        METHOD.build(METHOD.make_config("tiny"), 1)


def test_mean_pairwise_cosine_hand_checked():
    codes = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    # pairs: (e1, e2) 0, (e1, d) 1/sqrt2, (e2, d) 1/sqrt2 -> mean sqrt2/3
    assert mean_pairwise_cosine(codes) == pytest.approx(2**0.5 / 3)
    assert mean_pairwise_cosine(torch.ones(5, 3)) == pytest.approx(1.0)
    assert np.isnan(mean_pairwise_cosine(torch.ones(1, 3)))


def test_validation_metrics_are_accuracies_and_cosines():
    config, model = tiny()
    images, labels = real_batch()
    HARNESS.train(model, config, [images] * 3, labels=labels)
    metrics = METHOD.validation_metrics(model.eval(), images, labels)
    assert set(metrics) == {"val_acc_zs", "val_acc_zr", "val_cos_zs", "val_cos_zr"}
    with torch.no_grad():
        predicted = model.classifier(model.encoder_r(images)).argmax(1)
    assert metrics["val_acc_zr"] == pytest.approx(float((predicted == labels).float().mean()))
    for key, value in metrics.items():
        assert np.isfinite(value) and (0 <= value <= 1 if "acc" in key else -1 <= value <= 1)


def test_ablation_b2_is_one_entangled_code_without_z_r():
    """Table V, B2: one encoder, one code z (2d values) for the decoder and C; no L_r, L_con."""
    config, model = tiny(ablation="b2")
    assert model.encoder_r is None and model.decoder is not None
    images, labels = real_batch(32)
    with torch.no_grad():
        z = model.encoder_s(images)
    assert z.shape == (32, 2 * config.latent_dim)
    assert model.decoder(z).shape == images.shape
    (record,) = HARNESS.train(model, config, [images], labels=labels)
    assert {"L_rec", "L_adv", "L_s", "L_bce", "L_G"} <= set(record)
    assert not {"L_r", "L_con"} & set(record)
    assert_finite([record])
    assert_holds_only(METHOD.inference_module(model), kept=(model.encoder_s, model.classifier))
    assert set(METHOD.validation_metrics(model.eval(), images, labels)) == {
        "val_acc_zs",
        "val_cos_zs",
    }


def test_ablation_es_c_trains_only_the_classifier_path():
    config, model = tiny(ablation="es_c")
    assert model.encoder_r is model.decoder is model.discriminator is None
    assert set(METHOD.make_optimizers(model, config)) == {"generator"}
    images, labels = real_batch(32)
    (record,) = HARNESS.train(model, config, [images], labels=labels)
    assert set(record) == {"L_s", "L_G", "lambda_R"} and np.isfinite(record["L_s"])
    scores = METHOD.full_model_forward(model.eval(), images)
    assert scores.shape == (32,)
    with pytest.raises(ValueError, match="ablation"):
        tiny(ablation="b5")
