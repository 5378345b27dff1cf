"""CBiGAN's networks, losses (Eqs. 4-6, 10-13, WGAN-GP), score (Eqs. 7-9) and export parity."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import onnx
import pytest
import torch
from method_harness import (
    MethodHarness,
    assert_batch_independent,
    assert_finite,
    assert_holds_only,
    assert_onnx_parity,
    digits,
)
from skimage import data as skdata

from adedge.bundle import TilingSpec
from adedge.preprocess import InputSpec, prepare_batch
from adedge.runtime.tiling import cut_tiles, plan_tiles
from adedge.train.methods.base import StagePlan, TrainView
from adedge.train.methods.cbigan import (
    CBiGANConfig,
    critic_losses,
    eg_losses,
    gradient_penalty,
    to_tiles,
)
from adedge.train.nets.residual import (
    GBlock,
    d_block,
    g_block,
    pooling_schedule,
    residual_widths,
)

HARNESS = MethodHarness("cbigan")
METHOD, tiny = HARNESS.method, HARNESS.tiny


@pytest.fixture(autouse=True)
def one_thread():
    """Small convolutions gain nothing from threads, and lose much on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def brick_frame(side=128) -> np.ndarray:
    return cv2.resize(skdata.brick(), (side, side), interpolation=cv2.INTER_AREA)


def brick_crops(n=8, tile=32, side=128, seed=0) -> torch.Tensor:
    frame = brick_frame(side)
    rng = np.random.default_rng(seed)
    ys, xs = rng.integers(0, side - tile, size=(2, n))
    crops = [frame[y : y + tile, x : x + tile] for y, x in zip(ys, xs, strict=True)]
    return torch.from_numpy(prepare_batch(crops, InputSpec(tile, tile, "gray")))


# --- configuration and networks -----------------------------------------------------------


def test_paper_defaults():
    config = METHOD.make_config("paper")
    assert (config.image_size, config.channels, config.latent_dim) == (128, 3, 64)
    assert residual_widths(config.width) == [3, 6, 9, 12, 24, 48]
    assert (config.alpha, config.lambda_score, config.gp_weight) == (1e-4, 0.1, 10.0)
    assert (config.lr, config.batch_size, config.d_iters) == (1e-4, 32, 1)
    assert (config.negative_slope, config.latent_hidden) == (0.2, 512)
    assert config.mode == "object" and config.rotation == 0.0
    assert METHOD.make_config("paper", mode="texture", image_size=512).rotation == 45.0
    assert METHOD.make_config("paper", rotation_degrees=45).rotation == 45.0


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "scene"}, {"alpha": 1.5}, {"mode": "texture", "image_size": 100, "tile": 64}],
)
def test_bad_configs_are_refused(kwargs):
    with pytest.raises(ValueError):
        CBiGANConfig(**kwargs)


@pytest.mark.parametrize(
    "overrides, side, trunk_side",
    [
        ({"image_size": 32}, 32, 2),
        ({"image_size": 128, "channels": 3}, 128, 4),  # the authors' objects: 4x4x48
        ({"image_size": 16}, 16, 2),
        ({"mode": "texture", "image_size": 128, "tile": 64}, 64, 2),  # authors' textures
        ({"mode": "texture", "image_size": 512, "tile": 64, "channels": 3}, 64, 2),
    ],
)
def test_shapes_for_objects_and_textures(overrides, side, trunk_side):
    config, model = tiny(**overrides)
    assert config.input_size == side
    x = torch.randn(3, config.channels, side, side)
    z = model.encoder(x)
    assert z.shape == (3, config.latent_dim)
    assert model.generator(z).shape == x.shape
    assert model.critic(x, z).shape == (3,)
    assert model.critic.trunk(x).shape[-2:] == (trunk_side, trunk_side)
    ups = [b for b in model.generator.blocks if not isinstance(b.upsample, torch.nn.Identity)]
    assert all(isinstance(b, GBlock) for b in model.generator.blocks)
    assert len(ups) == int(np.log2(side // 2))  # G starts from 2x2
    assert (model.generator(z).abs() <= 1).all()


def test_residual_blocks_follow_the_authors_layout():
    block = d_block(3, 6)
    convs = [m for m in block.body.main if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3), (3, 3), (1, 1)]
    assert block.body.skip.kernel_size == (1, 1)
    assert block(torch.randn(2, 3, 16, 16)).shape == (2, 6, 8, 8)
    assert d_block(3, 6, pool=False)(torch.randn(2, 3, 16, 16)).shape == (2, 6, 16, 16)
    up = g_block(6, 3)
    assert up.upsample.mode == "bilinear"
    assert up(torch.randn(2, 6, 8, 8)).shape == (2, 3, 16, 16)
    slopes = {m.negative_slope for m in block.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.2}


def test_pooling_schedule_matches_the_authors_at_128_and_64():
    assert pooling_schedule(128, 6) == [True] * 5 + [False]
    assert pooling_schedule(64, 6) == [True] * 5 + [False]
    assert pooling_schedule(32, 6) == [True] * 4 + [False] * 2


# --- losses -------------------------------------------------------------------------------


def test_losses_finite_and_reconstruction_decreasing_on_digits():
    """With the consistency term weighted up, E/G learn to reconstruct real digits."""
    config, model = tiny(alpha=0.5, lr=3e-3)
    history = HARNESS.train(model, config, [digits(8)] * 20, progress=0.0)
    keys = {"L_D", "L_GP", "L_critic", "L_EG", "L_R", "L_Rz", "L_G"}
    assert all(set(record) == keys for record in history)
    assert_finite(history)
    recon = [h["L_R"] for h in history]
    assert np.mean(recon[-5:]) < 0.98 * np.mean(recon[:5])
    assert np.mean(np.diff(recon) < 0) > 0.75  # steady, not one lucky step


def test_paper_alpha_steps_are_finite_and_update_only_their_networks():
    config, model = tiny()
    optimizers = METHOD.make_optimizers(model, config)
    images = digits(8)
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(1)
    METHOD.critic_step(model, optimizers["critic"], images)
    after_critic = copy.deepcopy(model.state_dict())
    changed = {k for k in before if not torch.equal(before[k], after_critic[k])}
    assert changed and all(k.startswith("critic.") for k in changed)
    losses = METHOD.eg_step(model, optimizers["eg"], images)
    changed = {k for k in before if not torch.equal(after_critic[k], model.state_dict()[k])}
    assert changed and not any(k.startswith("critic.") for k in changed)
    assert all(p.requires_grad for p in model.critic.parameters())
    assert all(torch.isfinite(v) for v in losses.values())


def bigan_objective(model, images, z):
    """Eq. 5 written out independently: mean D(x, E(x)) - mean D(G(z), z)."""
    real = model.critic.head(
        torch.cat(
            [model.critic.trunk(images).flatten(1), model.critic.latent(model.encoder(images))], 1
        )
    )
    generated = model.generator(z)
    fake = model.critic.head(
        torch.cat([model.critic.trunk(generated).flatten(1), model.critic.latent(z)], 1)
    )
    return real.mean() - fake.mean()


def test_alpha_zero_is_the_wasserstein_bigan_objective():
    config, model = tiny(alpha=0.0)
    images, z = digits(8), torch.randn(8, config.latent_dim)
    losses = eg_losses(model, images, z, 0.0)
    expected = bigan_objective(model, images, z)
    assert torch.allclose(losses["total"], expected, atol=1e-6)
    assert losses["R"] > 0 and losses["Rz"] > 0  # L_C is there, with weight 0
    params = model.eg_parameters()
    grads = torch.autograd.grad(losses["total"], params, allow_unused=True)
    reference = torch.autograd.grad(expected, params, allow_unused=True)
    for g, r in zip(grads, reference, strict=True):
        assert (g is None and r is None) or torch.allclose(g, r, atol=1e-6)


def test_alpha_zero_update_is_one_adam_step_on_eq5():
    """The E/G update of the training step with α = 0 equals Adam on Eq. 5 alone."""
    config, model = tiny(alpha=0.0)
    reference = copy.deepcopy(model)
    images = digits(8)
    optimizer = METHOD.make_optimizers(model, config)["eg"]
    torch.manual_seed(7)
    METHOD.eg_step(model, optimizer, images)
    torch.manual_seed(7)
    z = torch.randn(8, config.latent_dim)
    ref_optimizer = torch.optim.Adam(
        reference.eg_parameters(), config.lr, betas=(config.beta1, config.beta2)
    )
    ref_optimizer.zero_grad()
    bigan_objective(reference, images, z).backward()
    ref_optimizer.step()
    for p, q in zip(model.eg_parameters(), reference.eg_parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-7)


def test_consistency_terms_are_per_sample_l1_sums_mixed_by_eq13():
    config, model = tiny()
    images, z = digits(8), torch.randn(8, config.latent_dim)
    losses = eg_losses(model, images, z, 0.25)
    with torch.no_grad():
        recon = model.generator(model.encoder(images))
        l_r = (images - recon).abs().sum(dim=(1, 2, 3)).mean()
        l_rz = (z - model.encoder(model.generator(z))).abs().sum(dim=1).mean()
    assert torch.allclose(losses["R"], l_r, rtol=1e-5)
    assert torch.allclose(losses["Rz"], l_rz, rtol=1e-5)
    expected = 0.75 * losses["EG"] + 0.25 * (l_r + l_rz)
    assert torch.allclose(losses["total"], expected, rtol=1e-5)


def test_critic_loss_is_eq6_plus_weighted_penalty():
    config, model = tiny()
    images, z, eps = digits(8), torch.randn(8, config.latent_dim), torch.rand(8)
    losses = critic_losses(model, images, z, eps)
    with torch.no_grad():
        expected = -bigan_objective(model, images, z)
    assert torch.allclose(losses["D"], expected, atol=1e-6)
    assert torch.allclose(losses["critic"], losses["D"] + config.gp_weight * losses["GP"])


class LinearCritic(torch.nn.Module):
    def __init__(self, wx: torch.Tensor, wz: torch.Tensor) -> None:
        super().__init__()
        self.wx, self.wz = wx, wz

    def forward(self, x, z):
        return (x.flatten(1) * self.wx).sum(1) + (z * self.wz).sum(1)


class QuadraticCritic(torch.nn.Module):
    """D = ||(x, z)||^2 / 2: the gradient at a point is the point itself."""

    def forward(self, x, z):
        return 0.5 * (x.flatten(1).pow(2).sum(1) + z.pow(2).sum(1))


def test_gradient_penalty_zero_for_unit_gradient_and_hand_values():
    torch.manual_seed(0)
    x_real, x_fake = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    z_real, z_fake = torch.randn(4, 3), torch.randn(4, 3)
    eps = torch.rand(4)
    w = torch.randn(19)
    wx, wz = w[:16] / w.norm(), w[16:] / w.norm()
    unit = gradient_penalty(LinearCritic(wx, wz), (x_real, z_real), (x_fake, z_fake), eps)
    assert unit.item() == pytest.approx(0.0, abs=1e-10)
    double = gradient_penalty(LinearCritic(2 * wx, 2 * wz), (x_real, z_real), (x_fake, z_fake), eps)
    assert double.item() == pytest.approx(1.0, rel=1e-5)
    # at the interpolated pair the gradient is the pair: (||pair|| - 1)^2, averaged
    penalty = gradient_penalty(QuadraticCritic(), (x_real, z_real), (x_fake, z_fake), eps)
    e = eps[:, None]
    pair = torch.cat(
        [e * x_real.flatten(1) + (1 - e) * x_fake.flatten(1), e * z_real + (1 - e) * z_fake], 1
    )
    assert penalty.item() == pytest.approx(((pair.norm(dim=1) - 1) ** 2).mean().item(), rel=1e-5)
    # the authors' quirk (real image with fake latent) is a different point
    quirk = torch.cat(
        [e * x_real.flatten(1) + (1 - e) * x_fake.flatten(1), e * z_fake + (1 - e) * z_real], 1
    )
    assert abs(penalty.item() - ((quirk.norm(dim=1) - 1) ** 2).mean().item()) > 1e-3


# --- score and inference module -----------------------------------------------------------


def trained(steps=3, **overrides):
    """A tiny model after a few steps: digits for objects, brick crops for textures."""
    config, model = tiny(**overrides)
    side = config.input_size
    images = brick_crops(tile=side) if config.mode == "texture" else digits(8, side)
    HARNESS.train(model, config, [images] * steps, progress=0.0)
    return config, model.eval()


def test_scorer_holds_only_encoder_generator_and_image_trunk():
    _, model = tiny()
    scorer = METHOD.inference_module(model)
    assert_holds_only(
        scorer,
        kept=(model.encoder, model.generator, model.critic.trunk),
        pruned=(model.critic.latent, model.critic.head),
    )
    assert not any(k.startswith(("latent", "head")) for k in scorer.state_dict())


def test_score_is_the_papers_sum_form_divided_by_the_pixel_count():
    config, model = trained()
    scorer = METHOD.inference_module(model)
    images = digits(8)
    with torch.no_grad():
        score, amap = scorer(images)
        z = model.encoder(images)
        recon = model.generator(z)
        # Eqs. 7-9 with the paper's L1 norms and f_D = the critic's concatenation layer
        l_r = (images - recon).abs().sum(dim=(1, 2, 3))
        l_fd = (model.critic.features(images, z) - model.critic.features(recon, z)).abs().sum(1)
        paper = (1 - config.lambda_score) * l_r + config.lambda_score * l_fd
    assert score.shape == (8,) and amap.shape == (8, 1, 32, 32)
    assert torch.allclose(score, paper / images[0].numel(), rtol=1e-5)
    assert torch.allclose(amap, (images - recon).abs().mean(1, keepdim=True), atol=1e-6)
    assert torch.allclose(amap.mean(dim=(1, 2, 3)), l_r / images[0].numel(), rtol=1e-5)


def test_mean_scale_weighs_the_two_means_with_lambda():
    config, model = trained(score_scale="mean")
    scorer = METHOD.inference_module(model)
    images = digits(8)
    with torch.no_grad():
        recon = model.generator(model.encoder(images))
        trunk = model.critic.trunk
        features = (trunk(images) - trunk(recon)).abs().flatten(1).mean(1)
        expected = 0.9 * (images - recon).abs().mean(dim=(1, 2, 3)) + 0.1 * features
        assert torch.allclose(scorer(images)[0], expected, rtol=1e-5)


def test_scores_do_not_depend_on_the_batch():
    _, model = trained()
    assert_batch_independent(METHOD.inference_module(model).eval(), digits(6), atol=1e-6)


def test_validation_loss_is_mean_score_and_tiles_texture_frames():
    config, model = tiny(mode="texture", image_size=128, tile=32)
    HARNESS.train(model, config, [brick_crops(seed=seed) for seed in range(3)], progress=0.0)
    model.eval()
    frame = brick_frame(128)
    frames = torch.from_numpy(prepare_batch([frame], InputSpec(128, 128, "gray")))
    tiles = to_tiles(frames, 32)
    assert tiles.shape == (16, 1, 32, 32)
    # same row-major order as the runtime's tiling plan
    plan = plan_tiles((128, 128), TilingSpec((128, 128), 32, 32, "reflect"))
    runtime_tiles = cut_tiles(frame, plan)[..., 0]
    expected = prepare_batch(list(runtime_tiles), InputSpec(32, 32, "gray"))
    assert np.allclose(tiles.numpy(), expected, atol=1e-6)
    with torch.no_grad():
        mean_score = METHOD.inference_module(model)(tiles)[0].mean().item()
    assert METHOD.validation_loss(model, frames, None) == pytest.approx(mean_score, rel=1e-6)


def test_stage_plans_and_modes():
    objects = METHOD.make_config("paper")
    assert METHOD.stage_plan(objects) == StagePlan(frame_size=128, view=TrainView())
    textures = METHOD.make_config("paper", mode="texture", image_size=512)
    plan = METHOD.stage_plan(textures)
    assert plan == StagePlan(
        frame_size=512,
        name="local",
        tile=64,
        stride=64,
        reduce="max",
        view=TrainView(crop=64, rotation_degrees=45.0),
    )
    assert plan.input_size == 64 and plan.tiled
    rotated = METHOD.make_config("paper", rotation_degrees=45)
    assert METHOD.stage_plan(rotated).view == TrainView(rotation_degrees=45.0)
    assert METHOD.mode_for_data("textures") == "texture"
    assert METHOD.mode_for_data("objects") == "object"


def test_onnx_parity_and_pruned_initializers(tmp_path):
    config, model = trained(steps=2, mode="texture", image_size=128, tile=32)
    with torch.no_grad():  # distinct biases, so the exporter cannot merge equal initialisers
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 1e-3)
    scorer = METHOD.inference_module(model).eval()
    frame = brick_frame(128)
    batch = to_tiles(torch.from_numpy(prepare_batch([frame], InputSpec(128, 128, "gray"))), 32)
    parity = assert_onnx_parity(
        scorer, InputSpec(32, 32, "gray"), tmp_path / "local.onnx", [batch], amap_atol=1e-4
    )
    assert parity.score.shape == (16,) and parity.amap.shape == (16, 1, 32, 32)
    floats = [t for t in parity.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    exported = sum(int(np.prod(t.dims)) for t in floats)
    assert exported == sum(p.numel() for p in scorer.parameters())
    assert exported < sum(p.numel() for p in model.parameters())
    assert not any(t.name.startswith(("critic", "latent", "head")) for t in floats)
