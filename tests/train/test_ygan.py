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
