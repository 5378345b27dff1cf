"""IGD (Chen, Tian, Pang & Carneiro, AAAI 2022): deep one-class classification via an
interpolated Gaussian descriptor.

An encoder z = f(x) (ResNet-18 family, Z = 128), its mirror decoder x̂ = g(z), a Gaussian
anomaly classifier p(y=0|ω,x) = exp(-‖f(x) - μ‖² / σ²) (Eq. 5) and an interpolation critic
d that predicts α from x̂_α = g(α z1 + (1 - α) z2), α ~ U(0, 0.5) (Eq. 9). Training is EM:
the E-step sets ω = (μ, σ) to the mean code and the root mean squared distance to it over
the training set (Eq. 3: σ² = E‖f(x) - μ‖²); the M-step is the gradient step on Eq. 7.

Losses, one step (Eq. 7 with λ1 = λ2 = 1, λ3 = 0.1, ρ = 0.15):

* encoder + decoder: L_G = ℓ_h + λ2 ℓ_fg, with ℓ_h = 1 - p(y=0|ω,x) (Eq. 8) and
  ℓ_fg = ℓ_r + λ3 ‖d(x̂_α)‖² (Eq. 11), the reconstruction loss
  ℓ_r = ρ·MAE + (1 - ρ)·(1 - MS-SSIM) (Eq. 12) and the term that fools the critic into
  answering α = 0 for every interpolation;
* critic: L_D = λ1 ℓ_d = λ1 (‖d(x̂_α) - α‖² + ‖d(ζx + (1 - ζ)x̂)‖²), ζ ~ U(0, 1) (Eq. 10).

Eq. 7 writes one loss over θ = {ψ, φ, η}; as in ACAI (Berthelot et al. 2018), which the
paper follows for ℓ_d, ℓ_d trains only the critic (η) and the fooling term of Eq. 11 only
the auto-encoder (ψ, φ): letting the auto-encoder minimise ℓ_d would help the critic it
is meant to fool. Expectations are means over the batch; ‖·‖² of the scalar critic output
is its square.

Score (Eqs. 14, 15) and map (Eq. 17) of one model: s = ℓ_r + ℓ_h per image (global model)
or per patch (local model; the runtime takes the max over the patch grid, Eq. 15, and
s = s_G + s_L, Eq. 13, with the stage weights ``stage_weight``, 1 and 1 by default). The
map is ρ·|x - x̂| (channel mean) + (1 - ρ)·(1 - m(ω)) per pixel, where m is the per-pixel
MS-SSIM similarity of :mod:`adedge.train.nets.msssim` (scale terms upsampled and averaged
with the scale weights). The inference module holds f, g and (μ, σ); the critic is pruned.

Choices where the paper is silent or the authors' code (docs/authors-code.md, IGD) differs:

* Scratch training of every weight (the paper's 'Scratch' rows); ``backbone_weights``
  loads a local torchvision-style ResNet-18 state dict into the encoder once, when the
  model is first built; the config then records it in ``backbone_source`` and clears the
  path, so a checkpoint (which carries the weights) rebuilds without the file. The
  authors froze a pretrained/distilled trunk and trained only a linear head.
* σ is the standard deviation of Eq. 3 and the classifier divides by σ². The authors'
  ``sigma`` is the mean squared distance itself (so their exp(-d²/sigma) is the same
  formula), but averaged over batches with a floor of 1 per batch, and their centre has
  every |c_i| < 0.1 pushed to ±0.1 (a Deep SVDD habit); we use the exact full-pass mean
  and σ² = E‖z‖² - ‖μ‖² accumulated in float64, floored only at 1e-12 against division
  by zero (``sigma_floor`` = 1 gives the authors' floor), and no centre clamping.
  Without a floor σ shrinks with every E-step (ℓ_h pulls the codes together and the
  decoder, BatchNorm after its input layer, does not care about their scale) until Adam's
  steps move the codes by more than σ: in our short Fashion-MNIST runs at lr 1e-3 ℓ_h
  then sat near 1 (no gradient) from the second epoch on, and the Gaussian term's test
  AUROC fell from 0.93 to 0.84; with ``sigma_floor=1`` it stayed trainable (0.935). We
  ship the paper's σ (no floor); the floor is one ``--set`` away.
* The E-step runs in eval mode (the mode the score uses), every ``e_step_every`` epochs
  (default 1, i.e. every EM iteration is one epoch; the authors re-estimate every 10).
  Each E-step first sets the encoder's BatchNorm running statistics to the exact average
  of its batch statistics over the training inputs (precise BN, as
  ``torch.optim.swa_utils.update_bn``), so (μ, σ) and the scorer's eval-mode codes
  describe the current weights; with the exponential running averages eval-mode codes lag
  the training-mode codes the loss sees (in one Fashion-MNIST run, width 1/8 and lr 1e-3,
  ℓ_h averaged 0.997 over the second epoch: no gradient). The authors' code never leaves
  eval mode, so their BatchNorm layers train with statistics fixed at 0/1; training our
  encoder with frozen (refreshed) statistics was consistent but worse (Gaussian-term test
  AUROC 0.65 against 0.85 with batch statistics, 4 short epochs), so the encoder trains
  with batch statistics. ``epoch_end`` runs the E-step due for the next epoch on the
  weights just trained (and always after the last epoch), so a checkpoint's (μ, σ) belong
  to its weights; ``epoch_start`` then skips the repeat. If a trainer has no
  ``epoch_end`` hook, ``validation_loss`` (run before every checkpoint) runs it first.
* x̂_α passes the decoder with BatchNorm batch statistics but frozen running statistics:
  interpolated codes never reach the decoder at inference.
* MAE and MS-SSIM are computed on pixels mapped to [0, 1] (inputs are normalised to
  [-1, 1]), so MAE is in units of the data range (as the authors' L1/data_range) and SSIM's
  constants have their usual meaning; ℓ_r uses means over pixels, not the sum of Eq. 12
  (FP16-safe: docs/architecture.md, Precision), and the authors' signed L1 in the patch score
  is |x - x̂| here.
* MS-SSIM settings by input size (docs/authors-code.md, IGD): window 11, 5 scales at 176 px
  and up; window 3, 4 scales (renormalised weights) at 32 px; fewer scales below (tiny tests).
* Decoder output tanh (the authors' has none; their inputs were ImageNet-normalised).
  Critic output is linear (the paper's critic regresses α; the authors' 32 px critic ends
  in a sigmoid, their 256 px one does not) and uses GroupNorm(1, C), i.e. LayerNorm, as
  the authors' critics do.
* x2 is another sample of the batch (the batch rolled by one, so x1 ≠ x2 as Eq. 9 asks;
  the authors flip the batch, which pairs the middle sample of an odd batch with itself).
* Adam: lr 1e-4 and weight decay 1e-6 on both optimisers (the paper); betas are Adam's
  defaults (0.9, 0.999) as the paper names no others (the authors use (0, 0.9) and decay
  weights of the generator only). No learning-rate decay (the authors' poly decay is not
  in the paper). Batch 64, 256 epochs (the paper).
* Stage weights 1/1 (Eq. 13 as written). The authors' detection script weights
  0.5·local + 0.5·global, with per-model mixes 0.9·rec + 0.1·gauss (local) and
  0.1·rec + 0.9·gauss (global); only the stage weights are exposed (``stage_weight``).
* Checkpoint selection (``selection``, :mod:`adedge.train.selection`): by default the last
  epoch of the fixed schedule (``last``). The former rule, the lowest mean score on
  held-out normal images (``val_loss``), follows the score's scale (the Gaussian term's σ
  and the reconstruction error both drift) and kept epoch 1 of 10 on grass and gravel;
  ``pseudo`` keeps the best AUROC of held-out normal inputs against the same inputs with
  synthetic defects. The authors kept the best *test* AUC.
* Local model: 32 px patches at stride 16 from the frame resized to ``image_size`` (256:
  15 x 15 = 225 patches, the authors' grid); training crops 32 px patches anywhere in the
  frame with random horizontal flips (the authors' augmentation); the E-step averages over
  every grid patch of every training frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adedge.bundle import sha256_file
from adedge.train.methods.base import CommonConfig, Method, StagePlan, TrainView, register_method
from adedge.train.nets.msssim import (
    MSSSIM,
    MSSSIMSettings,
    mean_absolute_error,
    settings_for_size,
)
from adedge.train.nets.resnet import (
    ResNetDecoder,
    ResNetEncoder,
    auto_stem,
    check_input_size,
    frozen_batchnorm_statistics,
    load_backbone,
)
from adedge.train.views import chunks

MODES = ("global", "local")
PIXEL_LOW, PIXEL_HIGH = -1.0, 1.0  # the trainer normalises with mean = std = 0.5
SIGMA_FLOOR = 1e-12


@dataclass
class IGDConfig(CommonConfig):
    """Defaults are the paper's (Implementation Details); the patches' are the authors' code's
    (docs/authors-code.md, IGD)."""

    image_size: int = 256  # global: the network input; local: the frame resized before tiling
    channels: int = 3
    mode: str = "global"  # "global" (whole images) or "local" (patches)
    tile: int = 32  # local: patch side (the network input)
    stride: int = 16  # local: patch stride (256 -> 15 x 15 = 225 patches)
    latent_dim: int = 128  # Z
    width: float = 1.0  # ResNet-18 width multiplier (64-128-256-512 at 1.0)
    stem: str | None = None  # "imagenet" | "cifar"; None: ImageNet stem from 64 px up
    rho: float = 0.15  # Eq. 12
    lambda1: float = 1.0  # Eq. 7: critic loss ℓ_d
    lambda2: float = 1.0  # Eq. 7: reconstruction constraint ℓ_fg
    lambda3: float = 0.1  # Eq. 11: fooling term
    alpha_max: float = 0.5  # α ~ U(0, alpha_max)
    lr: float = 1e-4
    weight_decay: float = 1e-6
    beta1: float = 0.9
    beta2: float = 0.999
    e_step_every: int = 1  # epochs between E-steps (re-estimates of μ, σ)
    sigma_floor: float = 0.0  # σ >= this after each E-step: 0 the paper, 1 the authors' code
    msssim_window: int | None = None  # None: 11 from 176 px up, else 3
    msssim_scales: int | None = None  # None: 5 (window 11) or 4 (window 3), fewer if small
    msssim_sigma: float = 1.5
    stage_weight: float = 1.0  # this model's weight in s = s_G + s_L (Eq. 13)
    hflip: bool | None = None  # training flips; None: local yes (authors), global no
    backbone_weights: str | None = None  # a local torchvision ResNet-18 state dict
    backbone_source: str | None = None  # set by build: which file was loaded
    batch_size: int = 64
    epochs: int = 256
    selection: str = "last"  # which epoch is best.pt (module docstring)


def input_size(config: IGDConfig) -> int:
    """The network's input side: the patch for the local model, the image otherwise."""
    if config.mode not in MODES:
        raise ValueError(f"IGD mode must be one of {MODES}, got '{config.mode}'")
    return config.tile if config.mode == "local" else config.image_size


def check_config(config: IGDConfig) -> None:
    """Raise ValueError naming the first setting that cannot work (before any training)."""
    size = input_size(config)
    if config.mode == "local" and not (0 < config.stride <= config.tile <= config.image_size):
        raise ValueError(
            f"local IGD needs 0 < stride <= tile <= image_size, got stride {config.stride}, "
            f"tile {config.tile}, image_size {config.image_size}"
        )
    if not 0.0 <= config.rho <= 1.0 or not 0.0 < config.alpha_max <= 1.0:
        raise ValueError(
            f"need 0 <= rho <= 1 and 0 < alpha_max <= 1, got {config.rho}, {config.alpha_max}"
        )
    check_input_size(size, config.stem or auto_stem(size))
    msssim_settings(config)


def msssim_settings(config: IGDConfig) -> MSSSIMSettings:
    return settings_for_size(
        input_size(config), config.msssim_window, config.msssim_scales, config.msssim_sigma
    )


class GaussianDescriptor(nn.Module):
    """The Gaussian anomaly classifier: ℓ_h = 1 - exp(-‖z - μ‖² / σ²) (Eqs. 5, 8).

    μ and σ are buffers set by the E-step (checkpoints carry them). ‖z - μ‖² / σ² is
    computed as mean_j (z_j - μ_j)² / (σ² / Z): the same number, from a mean (FP16-safe)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("mu", torch.zeros(latent_dim))
        self.register_buffer("sigma", torch.ones(()))

    def distance_ratio(self, z: torch.Tensor) -> torch.Tensor:
        """‖z - μ‖² / σ² per sample, float32."""
        squared = (z.to(torch.float32) - self.mu).pow(2).mean(dim=1)
        return squared / (self.sigma.pow(2) / self.latent_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 1.0 - torch.exp(-self.distance_ratio(z))

    @torch.no_grad()
    def estimate(self, codes: Iterable[torch.Tensor], floor: float = 0.0) -> int:
        """E-step (Eq. 3): μ = E[z], σ² = E‖z - μ‖² over all codes (float64 sums); σ is
        raised to ``floor`` where smaller (0: none, the paper; 1: the authors' code)."""
        count, total, squares = 0, None, None
        for z in codes:
            z = z.to(torch.float64)
            total = z.sum(0) if total is None else total + z.sum(0)
            batch_squares = z.pow(2).sum()
            squares = batch_squares if squares is None else squares + batch_squares
            count += len(z)
        if count == 0 or total is None or squares is None:
            raise ValueError("the E-step needs at least one training input")
        mu = total / count
        variance = (squares / count - mu.pow(2).sum()).clamp_min(max(SIGMA_FLOOR, floor**2))
        self.mu.copy_(mu.to(self.mu.dtype))
        self.sigma.copy_(variance.sqrt().to(self.sigma.dtype))
        return count


class ReconstructionError(nn.Module):
    """ℓ_r (Eq. 12) per sample and its per-pixel form (Eq. 17), float32, on [0, 1] pixels."""

    def __init__(self, channels: int, image_size: int, rho: float, settings: MSSSIMSettings):
        super().__init__()
        self.rho = rho
        self.msssim = MSSSIM(channels, image_size, settings, data_range=1.0)

    @staticmethod
    def to_unit(x: torch.Tensor) -> torch.Tensor:
        return (x.to(torch.float32) - PIXEL_LOW) / (PIXEL_HIGH - PIXEL_LOW)

    def forward(
        self, x: torch.Tensor, x_hat: torch.Tensor, with_map: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """ℓ_r (N,); with ``with_map`` also the per-pixel ℓ_r map (N, 1, H, W)."""
        a, b = self.to_unit(x), self.to_unit(x_hat)
        if not with_map:
            similarity = self.msssim(a, b)
            return self.rho * mean_absolute_error(a, b) + (1.0 - self.rho) * (1.0 - similarity)
        similarity, similarity_map = self.msssim(a, b, with_map=True)
        difference = (a - b).abs()
        score = self.rho * difference.flatten(1).mean(dim=1) + (1.0 - self.rho) * (1.0 - similarity)
        pixel = self.rho * difference.mean(dim=1, keepdim=True)
        return score, pixel + (1.0 - self.rho) * (1.0 - similarity_map)


class IGD(nn.Module):
    """Every network the paper trains for one model (global or local)."""

    def __init__(self, config: IGDConfig) -> None:
        super().__init__()
        check_config(config)
        size = input_size(config)
        stem = config.stem or auto_stem(size)
        args = (config.channels, config.latent_dim)
        self.encoder = ResNetEncoder(*args, config.width, stem)
        self.decoder = ResNetDecoder(*args, size, config.width, stem)
        self.critic = ResNetEncoder(config.channels, 1, config.width, stem, norm="layer")
        self.input_size = size
        self.statistics_fresh = False  # (μ, σ) estimated on the current weights
        self.patch_stride = config.stride if config.mode == "local" else None
        self.gaussian = GaussianDescriptor(config.latent_dim)
        self.reconstruction = ReconstructionError(
            config.channels, size, config.rho, msssim_settings(config)
        )

    def autoencoder_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.decoder.parameters()]

    def critique(self, images: torch.Tensor) -> torch.Tensor:
        """The critic's α estimate per image (N,)."""
        return self.critic(images).squeeze(1)


class IGDScorer(nn.Module):
    """The inference subgraph f + g + (μ, σ): images -> (score (N,), amap (N, 1, H, W)).

    score = ℓ_r + ℓ_h (Eq. 14 per image, the summand of Eq. 15 per patch); amap is the
    per-pixel ℓ_r of Eq. 17. ``reconstruction`` and ``gaussian`` hold the FP32 islands
    (their ONNX nodes are named ``/reconstruction/...`` and ``/gaussian/...``)."""

    def __init__(
        self,
        encoder: ResNetEncoder,
        decoder: ResNetDecoder,
        gaussian: GaussianDescriptor,
        reconstruction: ReconstructionError,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.gaussian = gaussian
        self.reconstruction = reconstruction

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(images)
        rec, amap = self.reconstruction(images, self.decoder(z), with_map=True)
        return rec + self.gaussian(z), amap


def interpolate_codes(z: torch.Tensor, alpha_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(α z1 + (1 - α) z2, α) with α ~ U(0, alpha_max) per sample (Eq. 9); z2 is the next
    sample of the batch (rolled by one), so x1 ≠ x2 whenever the batch has two samples."""
    alpha = torch.rand(z.shape[0], device=z.device, dtype=z.dtype) * alpha_max
    weight = alpha.unsqueeze(1)
    return weight * z + (1.0 - weight) * torch.roll(z, 1, dims=0), alpha


def critic_losses(
    model: IGD,
    mixed: torch.Tensor,
    alpha: torch.Tensor,
    images: torch.Tensor,
    recon: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of Eq. 10: ‖d(x̂_α) - α‖² and ‖d(ζx + (1 - ζ)x̂)‖², ζ ~ U(0, 1).

    One critic pass over both batches (its LayerNorm is per sample, so this equals two)."""
    n = mixed.shape[0]
    zeta = torch.rand(n, 1, 1, 1, device=images.device, dtype=images.dtype)
    blended = zeta * images + (1.0 - zeta) * recon
    predictions = model.critique(torch.cat([mixed, blended]))
    return (predictions[:n] - alpha).pow(2).mean(), predictions[n:].pow(2).mean()


def grid_patches(images: torch.Tensor, tile: int, stride: int) -> torch.Tensor:
    """(N·P, C, tile, tile) patches in row-major order, as the authors' unfold(2, t, s)."""
    n, c = images.shape[:2]
    patches = images.unfold(2, tile, stride).unfold(3, tile, stride)  # N, C, R, Q, t, t
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, tile, tile)


def _batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def refresh_batchnorm(module: nn.Module, inputs: Iterable[torch.Tensor]) -> None:
    """Set BatchNorm running statistics to the cumulative average of the batch statistics
    over ``inputs`` ("precise BN", as ``torch.optim.swa_utils.update_bn``)."""
    norms = _batchnorm_layers(module)
    if not norms:
        return
    was_training = module.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    for x in inputs:
        module(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    module.train(was_training)


@register_method(
    name="igd",
    title="IGD: interpolated Gaussian descriptor (Chen et al.)",
    paper="shared/papers/igd.txt",
    modes={
        "global": "whole image",
        "local": "32px patches at stride 16, local max-pooling; export a global and a local "
        "run together with two --checkpoint options",
    },
    pretrained_field="backbone_weights",
    pretrained_weights="a ResNet-18 state dict (torchvision names) for the encoder",
    headline_losses=("L_G",),
)
class IGDMethod(Method[IGDConfig]):
    config_type = IGDConfig
    presets: dict[str, dict[str, Any]] = {
        "paper": {},
        # A quarter of ResNet-18's width for CPU budgets: same losses, weights and EM.
        "small": {"width": 0.25, "epochs": 20},
        # For tests: a step in well under a second on two CPU cores at 32x32.
        "tiny": {"width": 0.0625, "latent_dim": 16, "batch_size": 16, "epochs": 1},
    }

    def build(self, config: IGDConfig, num_classes: int) -> IGD:
        model = IGD(config)
        if config.backbone_weights:
            path = config.backbone_weights
            report = load_backbone(model.encoder, path)
            config.backbone_source = (
                f"{Path(path).resolve()} (sha256 {sha256_file(path)[:16]}, "
                f"{len(report['loaded'])} tensors loaded, {len(report['skipped'])} skipped)"
            )
            config.backbone_weights = None  # loaded once; checkpoints carry the weights
        return model

    def make_optimizers(self, model: IGD, config: IGDConfig) -> dict[str, torch.optim.Optimizer]:
        options = {
            "lr": config.lr,
            "betas": (config.beta1, config.beta2),
            "weight_decay": config.weight_decay,
        }
        return {
            "autoencoder": torch.optim.Adam(model.autoencoder_parameters(), **options),
            "critic": torch.optim.Adam(model.critic.parameters(), **options),
        }

    def stage_plan(self, config: IGDConfig) -> StagePlan:
        check_config(config)
        if config.mode == "local":
            return StagePlan(
                frame_size=config.image_size,
                name="local",
                tile=config.tile,
                stride=config.stride,
                reduce="max",
                weight=config.stage_weight,
                view=TrainView(
                    crop=config.tile, hflip=True if config.hflip is None else config.hflip
                ),
            )
        return StagePlan(
            frame_size=config.image_size,
            name="global",
            weight=config.stage_weight,
            view=TrainView(hflip=bool(config.hflip)),
        )

    def epoch_start(
        self,
        model: IGD,
        config: IGDConfig,
        epoch: int,
        training_inputs: Callable[[int], Iterator[torch.Tensor]],
    ) -> None:
        """E-step every ``e_step_every`` epochs, from epoch 0 (before any M-step); skipped
        when :meth:`epoch_end` has just done it for the same weights."""
        if epoch % max(config.e_step_every, 1) or model.statistics_fresh:
            return
        self.e_step(model, config, training_inputs)

    def epoch_end(
        self,
        model: IGD,
        config: IGDConfig,
        epoch: int,
        training_inputs: Callable[[int], Iterator[torch.Tensor]],
    ) -> None:
        """The E-step due before epoch ``epoch + 1`` (and after the last epoch), run on the
        weights just trained, so that validation and the checkpoint saved after it score
        with (μ, σ) and encoder BatchNorm statistics that belong to those weights."""
        every = max(config.e_step_every, 1)
        if (epoch + 1) % every == 0 or epoch + 1 >= config.epochs:
            self.e_step(model, config, training_inputs)

    @torch.no_grad()
    def e_step(
        self,
        model: IGD,
        config: IGDConfig,
        training_inputs: Callable[[int], Iterator[torch.Tensor]],
    ) -> None:
        """Eq. 3 on the current weights: first the encoder's BatchNorm running statistics
        become the exact average of its batch statistics over the training inputs (so eval
        mode, which the E-step and the score use, matches the training-mode codes the loss
        sees), then μ and σ are estimated in eval mode."""
        refresh_batchnorm(model.encoder, training_inputs(config.batch_size))
        was_training = model.training
        model.eval()
        codes = (model.encoder(x) for x in training_inputs(config.batch_size))
        model.gaussian.estimate(codes, config.sigma_floor)
        model.train(was_training)
        model.statistics_fresh = True

    def train_step(
        self,
        model: IGD,
        optimizers: dict[str, torch.optim.Optimizer],
        images: torch.Tensor,
        labels: torch.Tensor,
        progress: float,
        config: IGDConfig,
    ) -> dict[str, float]:
        model.statistics_fresh = False
        model.critic.requires_grad_(False)  # the auto-encoder's step leaves d alone
        z = model.encoder(images)
        recon = model.decoder(z)
        loss_rec = model.reconstruction(images, recon).mean()  # Eq. 12
        loss_h = model.gaussian(z).mean()  # Eq. 8
        mixed_codes, alpha = interpolate_codes(z, config.alpha_max)  # Eq. 9
        with frozen_batchnorm_statistics(model.decoder):
            mixed = model.decoder(mixed_codes)
        loss_fool = model.critique(mixed).pow(2).mean()  # Eq. 11, second term
        loss_fg = loss_rec + config.lambda3 * loss_fool  # Eq. 11
        loss_g = loss_h + config.lambda2 * loss_fg  # Eq. 7 (ℓ_d trains the critic)
        optimizers["autoencoder"].zero_grad(set_to_none=True)
        loss_g.backward()
        optimizers["autoencoder"].step()
        model.critic.requires_grad_(True)

        loss_alpha, loss_reg = critic_losses(model, mixed.detach(), alpha, images, recon.detach())
        loss_d = loss_alpha + loss_reg  # Eq. 10
        optimizers["critic"].zero_grad(set_to_none=True)
        (config.lambda1 * loss_d).backward()
        optimizers["critic"].step()
        losses = {
            "L_rec": loss_rec,
            "L_h": loss_h,
            "L_fool": loss_fool,
            "L_fg": loss_fg,
            "L_G": loss_g,
            "L_d": loss_d,
            "L_d_alpha": loss_alpha,
            "L_d_reg": loss_reg,
        }
        return {k: float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def scores(self, model: IGD, images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """ℓ_r + ℓ_h per network input, in the model's current mode."""
        parts = []
        for x in chunks(images, chunk):
            z = model.encoder(x)
            parts.append(model.reconstruction(x, model.decoder(z)) + model.gaussian(z))
        return torch.cat(parts)

    @torch.no_grad()
    def validation_loss(self, model: IGD, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Mean anomaly score on held-out normal inputs (lower is better). Whole frames of a
        local model are cut into the patch grid and reduced by max (Eq. 15). The trainer
        calls :meth:`epoch_end` first, so (μ, σ) belong to the weights scored and saved."""
        if images.shape[-1] == model.input_size:
            return float(self.scores(model, images).mean())
        if model.patch_stride is None:
            raise ValueError(
                f"the global model takes {model.input_size}px images, got {tuple(images.shape)}"
            )
        patches = grid_patches(images, model.input_size, model.patch_stride)
        per_patch = self.scores(model, patches).view(len(images), -1)
        return float(per_patch.max(dim=1).values.mean())

    def inference_module(self, model: IGD) -> IGDScorer:
        return IGDScorer(model.encoder, model.decoder, model.gaussian, model.reconstruction)

    def prepare_export(
        self, model: IGD, config: IGDConfig, calibration: torch.Tensor
    ) -> dict[str, Any]:
        settings = model.reconstruction.msssim.settings
        facts: dict[str, Any] = {
            "mode": config.mode,
            "score": "l_r + l_h (Eqs. 12, 8); amap: per-pixel l_r (Eq. 17)",
            "sigma": float(model.gaussian.sigma),
            "mu_norm": float(model.gaussian.mu.norm()),
            "msssim": {
                "window": settings.window,
                "sigma": settings.sigma,
                "weights": list(settings.weights),
            },
            "stage_weight": config.stage_weight,
        }
        if len(calibration):
            model.eval()
            facts["calibration_score_mean"] = float(self.scores(model, calibration).mean())
        return facts
