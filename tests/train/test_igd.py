"""IGD: MS-SSIM against an independent reference, the EM statistics, the critic, the local
max-pooling against the runtime's tiling, pruning and ONNX export parity (tiny preset)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import pytorch_msssim
import torch
from method_harness import (
    MethodHarness,
    assert_batch_independent,
    assert_finite,
    assert_holds_only,
    assert_onnx_parity,
)
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim
from skimage import data as skdata

from adedge.bundle import TilingSpec
from adedge.preprocess import InputSpec, prepare_batch
from adedge.runtime.tiling import cut_tiles, plan_tiles, reduce_scores
from adedge.train.methods.igd import (
    critic_losses,
    grid_patches,
    interpolate_codes,
    msssim_settings,
)
from adedge.train.nets.msssim import MSSSIM, STANDARD_WEIGHTS, settings_for_size
from adedge.train.nets.resnet import (
    BasicBlock,
    ResNetDecoder,
    ResNetEncoder,
    frozen_batchnorm_statistics,
)

HARNESS = MethodHarness("igd", image_size=32, channels=1)
METHOD, tiny = HARNESS.method, HARNESS.tiny


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions run fastest on one thread (no spin-waiting on a shared 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- real images ---------------------------------------------------------------------------


def texture(name: str = "brick") -> np.ndarray:
    return getattr(skdata, name)()  # 512x512 grey uint8, bundled with scikit-image


def unit(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, 3) uint8 -> float32 (N, C, H, W) in [0, 1]."""
    array = images.astype(np.float32) / 255.0
    array = array[:, None] if array.ndim == 3 else array.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(array))


def crops(image: np.ndarray, side: int, origins: list[tuple[int, int]]) -> np.ndarray:
    return np.stack([image[y : y + side, x : x + side] for y, x in origins])


def real_pairs(side: int, colour: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of real images: shifted neighbours, noisy, blurred, darker, and unrelated."""
    image = skdata.astronaut() if colour else texture("brick")
    top = 512 - side - 4
    places = [(0.1, 0.1), (0.5, 0.3), (0.9, 0.9), (0.2, 0.7), (0.0, 1.0)]
    origins = [(int(top * a), int(top * b)) for a, b in places]
    a = crops(image, side, origins)
    b = crops(image, side, [(origins[0][0] + 1, origins[0][1] + 3), *origins[1:4], (top, 0)])
    x, y = unit(a), unit(b)
    rng = torch.Generator().manual_seed(0)
    y[1] = (y[1] + 0.08 * torch.randn(y[1].shape, generator=rng)).clamp(0, 1)
    y[2] = torch.nn.functional.avg_pool2d(y[2:3], 3, 1, 1)[0]
    y[3] = y[3] * 0.7
    return x, y


def normalised(images: list[np.ndarray], side: int) -> torch.Tensor:
    return torch.from_numpy(prepare_batch(images, InputSpec(side, side, "gray")))


@functools.cache
def digit_images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[:128] * (255.0 / 16.0)).astype(np.uint8)


def digits(side: int = 32, n: int = 64) -> torch.Tensor:
    return normalised(list(digit_images()[:n]), side)


def texture_patches(side: int, n: int, name: str = "brick", seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    image = texture(name)
    origins = [tuple(rng.integers(0, 512 - side, 2)) for _ in range(n)]
    return normalised(list(crops(image, side, origins)), side)


def reference_msssim_32(x: torch.Tensor, y: torch.Tensor, weights: tuple[float, ...]):
    """pytorch_msssim refuses 32 px with window 3 (it asserts side > 32); this composes its
    own per-scale ``_ssim`` and pooling exactly as its ``ms_ssim`` does."""
    win = _fspecial_gauss_1d(3, 1.5).repeat(x.shape[1], 1, 1, 1)
    terms = []
    for level in range(len(weights)):
        ssim_pc, cs = _ssim(x, y, data_range=1.0, win=win, size_average=False)
        if level < len(weights) - 1:
            terms.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = torch.nn.functional.avg_pool2d(x, kernel_size=2, padding=padding)
            y = torch.nn.functional.avg_pool2d(y, kernel_size=2, padding=padding)
    stacked = torch.stack(terms + [torch.relu(ssim_pc)])
    return torch.prod(stacked ** torch.tensor(weights).view(-1, 1, 1), dim=0).mean(1)


# --- models --------------------------------------------------------------------------------


def batches_of(images: torch.Tensor):
    return lambda size: iter(images.split(size))


def train(config, model, images, steps, batch=8):
    optimizers = METHOD.make_optimizers(model, config)
    METHOD.epoch_start(model, config, 0, batches_of(images))
    starts = [(i * batch) % (len(images) - batch + 1) for i in range(steps)]
    batches = [images[start : start + batch] for start in starts]
    history = HARNESS.train(model, config, batches, optimizers=optimizers)
    METHOD.epoch_end(model, config, 0, batches_of(images))
    model.eval()
    return history


@pytest.fixture(scope="module")
def trained_global():
    config, model = tiny(lr=1e-3)  # the trainer's --lr; 1e-4 (the paper's) is slow for a test
    images = digits(32, 96)
    history = train(config, model, images, steps=16)
    return config, model, images, history


@pytest.fixture(scope="module")
def trained_local():
    config, model = tiny(mode="local", image_size=256)
    images = texture_patches(32, 96)
    train(config, model, images, steps=6)
    return config, model, images


# --- configuration and networks ------------------------------------------------------------


def test_paper_defaults():
    config = METHOD.make_config("paper")
    assert (config.latent_dim, config.rho, config.alpha_max) == (128, 0.15, 0.5)
    assert (config.lambda1, config.lambda2, config.lambda3) == (1.0, 1.0, 0.1)
    assert (config.lr, config.weight_decay, config.batch_size, config.epochs) == (
        1e-4,
        1e-6,
        64,
        256,
    )
    assert (config.tile, config.stride, config.width, config.stage_weight) == (32, 16, 1.0, 1.0)
    assert config.backbone_weights is None


@pytest.mark.parametrize(
    "side, stem, last",
    [(8, "cifar", 1), (32, "cifar", 4), (64, "imagenet", 2), (256, "imagenet", 8)],
)
def test_resnet18_family_shapes(side, stem, last):
    torch.manual_seed(0)
    encoder = ResNetEncoder(3, 16, width=0.125, stem=stem)
    decoder = ResNetDecoder(3, 16, side, width=0.125, stem=stem)
    x = torch.randn(2, 3, side, side)
    assert encoder.features(x).shape[-2:] == (last, last)
    assert encoder(x).shape == (2, 16)
    assert decoder(encoder(x)).shape == x.shape
    blocks = [m for m in encoder.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8  # ResNet-18: [2, 2, 2, 2]
    assert [len(getattr(encoder, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="multiple of"):
        ResNetDecoder(3, 16, side + 4, width=0.125, stem=stem)


# --- MS-SSIM -------------------------------------------------------------------------------


def test_msssim_settings_by_input_size():
    large = settings_for_size(256)
    assert (large.window, large.sigma, large.weights) == (11, 1.5, STANDARD_WEIGHTS)
    small = settings_for_size(32)
    assert small.window == 3 and small.scales == 4
    # the authors' weights at 32 px: the standard first four, renormalised to sum to 1
    # (the expected values are rounded to 4 decimals)
    assert small.weights == pytest.approx((0.0516, 0.3295, 0.3463, 0.2726), abs=2e-4)
    assert sum(small.weights) == pytest.approx(1.0)
    assert [settings_for_size(s).scales for s in (16, 8)] == [3, 2]
    assert settings_for_size(160).window == 3  # 160 / 16 = 10 cannot hold 11 px
    with pytest.raises(ValueError, match="scales need"):
        settings_for_size(32, window=3, scales=5)
    with pytest.raises(ValueError, match="smaller than"):
        settings_for_size(8, window=11)
    config = METHOD.make_config("tiny", mode="local", image_size=256)
    assert msssim_settings(config).scales == 4  # the patch, not the frame, sets it


@pytest.mark.parametrize("side, colour", [(256, False), (192, True)])
def test_msssim_matches_reference_window_11(side, colour):
    x, y = real_pairs(side, colour)
    ours = MSSSIM(x.shape[1], side)(x, y)
    reference = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False)
    assert ours.shape == (len(x),)
    assert torch.allclose(ours, reference, atol=1e-4)
    assert ours.std() > 0.05  # the pairs span a real range of similarities


@pytest.mark.parametrize("side", [36, 64])
def test_msssim_matches_reference_window_3(side):
    settings = settings_for_size(side)
    assert settings.window == 3
    x, y = real_pairs(side)
    ours = MSSSIM(1, side, settings)(x, y)
    reference = pytorch_msssim.ms_ssim(
        x, y, data_range=1.0, size_average=False, win_size=3, weights=list(settings.weights)
    )
    assert torch.allclose(ours, reference, atol=1e-4)


def test_msssim_matches_reference_at_32px_on_digits_and_textures():
    settings = settings_for_size(32)
    x = torch.cat([digits(32, 6), texture_patches(32, 6)]) * 0.5 + 0.5
    y = torch.cat([x[1:6], x[:1], x[7:], x[6:7]])  # every image against another
    y[::3] = (x[::3] * 0.8 + 0.1).clamp(0, 1)  # and some against an edit of itself
    ours = MSSSIM(1, 32, settings)(x, y)
    reference = reference_msssim_32(x, y, settings.weights)
    assert torch.allclose(ours, reference, atol=1e-4)
    assert ours[::3].min() > ours[1::3].max()  # an edit is closer than another image


def test_msssim_identical_images_and_the_pixel_map():
    x = texture_patches(64, 3) * 0.5 + 0.5
    module = MSSSIM(1, 64)
    value, similarity = module(x, x, with_map=True)
    assert torch.allclose(value, torch.ones(3), atol=1e-5)
    assert similarity.shape == (3, 1, 64, 64)
    assert torch.allclose(similarity, torch.ones_like(similarity), atol=1e-5)
    damaged = x.clone()
    damaged[:, :, 40:52, 8:20] = 0.0  # a dark square defect
    _, similarity = module(x, damaged, with_map=True)
    inside = similarity[:, 0, 40:52, 8:20].mean()
    outside = similarity[:, 0, :24, 32:].mean()
    assert inside < 0.5 < outside


# --- EM, losses and the critic -------------------------------------------------------------


def test_e_step_equals_direct_statistics():
    config, model = tiny(e_step_every=3)
    images = digits(32, 40)
    model.train()
    METHOD.epoch_start(model, config, 0, batches_of(images))
    assert model.training  # the E-step leaves the training mode as it found it
    bn = model.encoder.bn1
    assert int(bn.num_batches_tracked) > 0 and bn.running_var.mean() != 1.0  # refreshed
    model.eval()
    with torch.no_grad():
        z = model.encoder(images).double()
    mu = z.mean(0)
    sigma = ((z - mu) ** 2).sum(1).mean().sqrt()
    assert torch.allclose(model.gaussian.mu.double(), mu, atol=1e-5)
    assert float(model.gaussian.sigma) == pytest.approx(float(sigma), rel=1e-5)
    # ℓ_h = 1 - exp(-‖z - μ‖² / σ²) (Eqs. 5, 8)
    expected = 1 - torch.exp(-((z - mu) ** 2).sum(1) / sigma**2)
    assert torch.allclose(model.gaussian(z.float()).double(), expected, atol=1e-5)
    assert "gaussian.mu" in model.state_dict() and "gaussian.sigma" in model.state_dict()
    model.gaussian.estimate(iter([z.float()]), floor=10.0)  # the authors' floor, if asked
    assert float(model.gaussian.sigma) == pytest.approx(10.0)


def test_e_step_schedule():
    """Every e_step_every epochs; epoch_end runs the one due next (and the last one) on the
    weights just trained, and epoch_start does not repeat it."""
    config, model = tiny(e_step_every=3, epochs=8)
    images = digits(32, 16)
    passes = []

    def inputs(size):
        passes.append(size)
        return iter(images.split(size))

    def runs(hook, epoch, trained=True):
        model.statistics_fresh = model.statistics_fresh and not trained
        before = len(passes)
        hook(model, config, epoch, inputs)
        return len(passes) > before

    assert runs(METHOD.epoch_start, 0)
    assert not runs(METHOD.epoch_start, 0, trained=False)  # fresh: nothing to redo
    assert [runs(METHOD.epoch_start, e) for e in (1, 2, 3, 4, 6)] == [0, 0, 1, 0, 1]
    assert [runs(METHOD.epoch_end, e) for e in (0, 1, 2, 3, 5, 7)] == [0, 0, 1, 0, 1, 1]
    assert not runs(METHOD.epoch_start, 3, trained=False)  # epoch_end(2) did it
    assert passes[:2] == [config.batch_size] * 2  # precise BN pass, then the estimate
    # validation scores with the statistics the trainer's epoch_end left: no E-step of its own
    model.eval()
    assert not runs(lambda m, *_: METHOD.validation_loss(m, images, None), 7)


def test_losses_finite_and_decreasing(trained_global):
    _, _, _, history = trained_global
    assert {"L_G", "L_rec", "L_h", "L_fool", "L_fg", "L_d"} <= set(history[0])
    assert_finite(history)
    for record in history:
        assert record["L_G"] == pytest.approx(record["L_h"] + record["L_fg"], rel=1e-5)
    first = {k: np.mean([h[k] for h in history[:4]]) for k in ("L_G", "L_rec")}
    last = {k: np.mean([h[k] for h in history[-4:]]) for k in ("L_G", "L_rec")}
    assert last["L_rec"] < 0.9 * first["L_rec"]
    assert last["L_G"] < 0.9 * first["L_G"]


def test_critic_learns_alpha_and_the_blend_target():
    """Eq. 10 trains d to answer α on decoded interpolations and 0 on image-space blends
    ζx + (1 - ζ)x̂: its loss falls, below what the best input-blind answer can reach."""
    _, model = tiny()
    images = digits(32, 16)
    model.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        z = model.encoder(images)
        recon = model.decoder(z)
        codes, alpha = interpolate_codes(z, 0.5)
        mixed = model.decoder(codes)
    assert ((alpha >= 0) & (alpha <= 0.5)).all()
    assert torch.allclose(codes[1], alpha[1] * z[1] + (1 - alpha[1]) * z[0])  # x2 ≠ x1
    optimizer = torch.optim.Adam(model.critic.parameters(), 1e-3)
    losses = []
    for _ in range(40):
        loss_alpha, loss_reg = critic_losses(model, mixed, alpha, images, recon)
        optimizer.zero_grad()
        (loss_alpha + loss_reg).backward()
        optimizer.step()
        losses.append(float((loss_alpha + loss_reg).detach()))
    # one constant answer c for every input is best at c = mean(α) / 2
    c = float(alpha.mean()) / 2
    blind = float(((c - alpha) ** 2).mean()) + c**2
    assert np.mean(losses[-5:]) < 0.1 * np.mean(losses[:5])
    assert np.mean(losses[-5:]) < blind
    with torch.no_grad():
        on_mixed = model.critique(mixed).mean()
        on_blends = model.critique(0.5 * images + 0.5 * recon).mean()
    assert on_blends.abs() < on_mixed


def test_interpolations_leave_decoder_running_statistics_alone():
    _, model = tiny()
    model.train()
    before = {k: v.clone() for k, v in model.decoder.state_dict().items() if "running" in k}
    with frozen_batchnorm_statistics(model.decoder):
        model.decoder(torch.randn(8, 16))
    after = model.decoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.decoder.bn0.momentum == 0.1  # restored
    model.decoder(torch.randn(8, 16))
    assert not torch.equal(before["bn0.running_mean"], model.decoder.bn0.running_mean)


# --- the inference module ------------------------------------------------------------------


def test_score_is_reconstruction_plus_gaussian_and_batch_independent(trained_global):
    config, model, images, _ = trained_global
    scorer = METHOD.inference_module(model).eval()
    x = images[:8]
    with torch.no_grad():
        score, amap = scorer(x)
        z = model.encoder(x)
        recon = model.decoder(z)
        a, b = x * 0.5 + 0.5, recon * 0.5 + 0.5
        mae = (a - b).abs().mean((1, 2, 3))
        ms = reference_msssim_32(a, b, msssim_settings(config).weights)
        rec = config.rho * mae + (1 - config.rho) * (1 - ms)
        d2 = ((z - model.gaussian.mu) ** 2).sum(1)
        gauss = 1 - torch.exp(-d2 / model.gaussian.sigma**2)
    assert torch.allclose(score, rec + gauss, atol=1e-5)
    assert_batch_independent(scorer, x, atol=1e-5)
    assert amap.shape == (8, 1, 32, 32) and amap.dtype == torch.float32
    assert (amap >= 0).all()
    # the map of an image against itself is zero; a local defect lights up where it is
    _, identical = model.reconstruction(x, x, with_map=True)
    assert float(identical.abs().max()) < 1e-5
    damaged = x.clone()
    damaged[:, :, 20:28, 4:12] = 1.0
    _, defect_map = model.reconstruction(x, damaged, with_map=True)
    assert defect_map[:, 0, 20:28, 4:12].mean() > 4 * defect_map[:, 0, :12, 18:].mean()


def test_validation_loss_is_mean_held_out_score(trained_global):
    _, model, images, _ = trained_global
    scorer = METHOD.inference_module(model).eval()
    with torch.no_grad():
        expected = float(scorer(images[-32:])[0].mean())
    assert METHOD.validation_loss(model, images[-32:], None) == pytest.approx(expected, rel=1e-5)


def test_inference_module_prunes_the_critic(trained_global):
    _, model, _, _ = trained_global
    scorer = METHOD.inference_module(model)
    assert_holds_only(scorer, kept=(model.encoder, model.decoder), pruned=(model.critic,))
    keys = set(scorer.state_dict())
    assert {"gaussian.mu", "gaussian.sigma"} <= keys
    assert not any(k.startswith("critic") for k in keys)


def _parity(scorer, images, tmp_path, side):
    path = tmp_path / f"igd{side}.onnx"
    spec = InputSpec(side, side, "gray")
    parity = assert_onnx_parity(
        scorer.eval(), spec, path, [images], amap_atol=1e-4, amap_relative=True
    )
    return parity.graph


def test_export_parity_global_without_the_critic(trained_global, tmp_path):
    _, model, images, _ = trained_global
    scorer = METHOD.inference_module(model)
    graph = _parity(scorer, images[:24], tmp_path, 32)
    assert not any("critic" in t.name for t in graph.initializer)
    in_graph = int(sum(np.prod(t.dims) for t in graph.initializer))
    kept = sum(p.numel() for p in scorer.parameters()) + model.gaussian.mu.numel() + 64
    critic = sum(p.numel() for p in model.critic.parameters())
    assert in_graph <= kept  # BatchNorm folds away; no critic weight came along
    assert in_graph < sum(p.numel() for p in model.parameters()) - critic / 2
    # the FP32 islands keep recognisable node names for the FP16 converter
    names = [node.name for node in graph.node]
    assert any(n.startswith("/reconstruction/msssim/") for n in names)
    assert any(n.startswith("/gaussian/") and "Exp" in n for n in names)


def test_export_parity_local(trained_local, tmp_path):
    _, model, images = trained_local
    _parity(METHOD.inference_module(model), images[:24], tmp_path, 32)


def test_export_parity_global_256_window_11(tmp_path):
    config, model = tiny(image_size=256)
    assert msssim_settings(config).window == 11
    images = texture_patches(256, 4, "grass")
    METHOD.epoch_start(model, config, 0, batches_of(images))
    model.eval()
    _parity(METHOD.inference_module(model), images, tmp_path, 256)


# --- the local model and the runtime's tiling ----------------------------------------------


def test_local_max_pooling_matches_the_runtime(trained_local):
    _, model, _ = trained_local
    plan = plan_tiles((256, 256), TilingSpec((256, 256), 32, 16))
    assert plan.count == 225 and plan.grid == (15, 15) and plan.padded_hw == (256, 256)
    frame = texture("gravel")[100:356, 50:306].copy()
    frame[150:170, 60:90] = 255  # a bright defect
    tiles = cut_tiles(frame, plan)  # (225, 32, 32, 1) uint8, row-major
    batch = normalised(list(tiles[..., 0]), 32)
    scorer = METHOD.inference_module(model).eval()
    with torch.no_grad():
        tile_scores = scorer(batch)[0].numpy()
        # the authors' unfold(2, 32, 16).unfold(3, 32, 16) grid gives the same patches
        whole = normalised([frame], 256)
        unfolded = scorer(grid_patches(whole, 32, 16))[0].numpy()
    np.testing.assert_allclose(unfolded, tile_scores, atol=1e-5)
    assert reduce_scores(tile_scores, plan, "max") == pytest.approx(float(np.max(tile_scores)))
    # Eq. 15 on whole frames in validation_loss: the max over the 225 patch scores
    assert METHOD.validation_loss(model, whole, None) == pytest.approx(
        float(np.max(tile_scores)), rel=1e-5
    )


def test_stage_plans():
    global_plan = METHOD.stage_plan(METHOD.make_config("paper", image_size=256))
    assert (global_plan.name, global_plan.frame_size, global_plan.tile) == ("global", 256, None)
    assert global_plan.input_size == 256 and global_plan.weight == 1.0
    assert not global_plan.view.hflip and global_plan.view.crop is None
    local = METHOD.stage_plan(METHOD.make_config("paper", mode="local", image_size=256))
    assert (local.name, local.frame_size, local.tile, local.stride) == ("local", 256, 32, 16)
    assert local.reduce == "max" and local.input_size == 32 and local.tiled
    assert local.view.crop == 32 and local.view.hflip
    halves = METHOD.stage_plan(METHOD.make_config("paper", mode="local", stage_weight=0.5))
    assert halves.weight == 0.5
    with pytest.raises(ValueError, match="mode"):
        METHOD.stage_plan(METHOD.make_config("paper", mode="tiles"))
    with pytest.raises(ValueError, match="stride <= tile"):
        METHOD.stage_plan(METHOD.make_config("paper", mode="local", stride=48))
    with pytest.raises(ValueError, match="multiple of 32"):
        METHOD.stage_plan(METHOD.make_config("paper", image_size=200))


def test_tiny_inputs_use_fewer_scales_and_train():
    for side, scales in ((16, 3), (8, 2)):
        config, model = tiny(image_size=side)
        assert model.reconstruction.msssim.settings.scales == scales
        images = digits(side, 16)
        history = train(config, model, images, steps=2)
        assert all(np.isfinite(v) for v in history[-1].values())


# --- backbone weights ----------------------------------------------------------------------


def test_backbone_weights_load_by_torchvision_names(tmp_path):
    torch.manual_seed(3)
    source = ResNetEncoder(1, 16, width=0.0625, stem="cifar")
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("project")}
    assert "layer2.0.downsample.0.weight" in state and "bn1.running_mean" in state
    state["fc.weight"] = torch.randn(1000, 64)  # torchvision's classifier is ignored
    state["fc.bias"] = torch.randn(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    config, model = tiny(backbone_weights=str(path))
    loaded = model.encoder.state_dict()
    for name, tensor in state.items():
        if not name.startswith("fc"):
            assert torch.equal(loaded[name], tensor), name
    assert not torch.equal(loaded["project.weight"], source.state_dict()["project.weight"])
    assert config.backbone_weights is None  # a checkpoint rebuilds without the file
    assert str(path) in config.backbone_source and "skipped" in config.backbone_source
    # a colour ResNet fits a grey encoder by summing conv1 over its colour channels
    colour = ResNetEncoder(3, 16, width=0.0625, stem="cifar").state_dict()
    torch.save(colour, path)
    _, grey = tiny(backbone_weights=str(path))
    assert torch.allclose(grey.encoder.conv1.weight, colour["conv1.weight"].sum(1, keepdim=True))
    torch.save({"something.else": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="no tensor"):
        tiny(backbone_weights=str(path))
