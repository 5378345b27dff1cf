"""DDR-ID (Lin et al.): dual deep reconstruction networks based image decomposition.

Two auto-encoders of the same DCGAN-like architecture (Table 1) decompose an image: the
class-specific R_C = (E_C, D_C) gives X_C, the residual R_N = (E_N, D_N) gives X_N, and
X̃ = X_C + X_N must reconstruct X. Training (Algorithm 1) has two phases:

* pretraining: R_C and R_N as plain auto-encoders, Eqs. 1-2 (squared L2 per image);
* finetuning, after Z_C = mean E_C latent of the training images is fixed (a buffer, never a
  parameter): L_OC = ‖E_C(X) − Z_C‖² (Eq. 3) + L_LSC, a GAN game in which the latent
  discriminator D_L tells samples of N(Z_C, σ²I) from E_C(X) (Eq. 4; D_L ascends it with its
  own optimiser, E_C descends log(1 − D_L(E_C(X))) as Algorithm 1 writes it) + L_R =
  ‖R_C(X) + R_N(X) − X‖² (Eq. 5), summed with unit weights (Eq. 6).

Scores (Section 3.3): AS_l = ‖E_C(x) − Z_C‖² (Eq. 7) and AS_r = ‖R_C(x) − D_C(Z_C)‖²
(Eq. 8). At export, :meth:`DDRIDMethod.prepare_export` applies Algorithm 2 to held-out normal
images: AS_l if its mean there is lower than AS_r's mean, else AS_r. The rule compares the
paper's squared norms exactly as written, although they live on different scales (d latent
dimensions against C·H·W pixels): we follow it and report both means in the card. The
exported graph holds E_C (+ D_C for AS_r) with Z_C and the template D_C(Z_C) as constants;
R_N and D_L are pruned.

Preprocessing (Section 4.1, after Deep SVDD): global contrast normalisation with the L1 norm
per image, then min-max scaling with the minimum and maximum of the GCN'd training images.
The runtime only resizes and normalises with the card's mean/std (0.5/0.5), so both steps
run *inside* the networks (:class:`GCNMinMax`), the one module that training, validation
and the exported graph share: the runtime applies training's normalisation by construction.
GCN is invariant to any map a·x + b (a > 0) of the whole image, so it gives the same values
on the card's [-1, 1] input as on [0, 1] pixels (the trainer's mean/std are equal across
channels); the min-max constants are buffers fitted over the training inputs before the first
epoch and travel with the checkpoint and the graph.

Choices where the paper is silent or ambiguous (each is ours):

* Table 1's decoder ends with DeConv4-2-64 and Tanh, which cannot output 1 or 3 channels:
  we add BatchNorm + LeakyReLU after it (as after every other deconvolution) and a 3x3
  convolution to the image channels before the tanh. Its 32 px output is centre-cropped for
  28 px input (the MNIST column's encoder maps 28 px to 1x1 with its four convolutions).
* Encoders are bias-free with non-affine BatchNorm, as in Deep SVDD whose one-class loss the
  paper adopts (its Prop. 2: bias terms allow collapse onto the centre). Decoders and D_L keep
  biases. The layer order follows Table 1 (conv -> BatchNorm -> activation).
* σ of the latent prior N(Z_C, σ²I) is "a small value": σ = 0.1 (``prior_sigma``).
* Z_C is the plain mean of the E_C latents (Algorithm 1) computed in eval mode (running
  BatchNorm statistics, as inference will see them); Deep SVDD's push of near-zero
  coordinates to ±0.1 is not in this paper and is not applied. Just before, the BatchNorm
  running statistics of R_C and R_N are re-estimated over the training set with the
  pretrained weights (a cumulative average, as ``torch.optim.swa_utils.update_bn`` does):
  after a short pretraining the exponential running averages still carry their initial
  (0, 1), and DCGAN-initialised layers have variances far below 1, which would bias Z_C.
* Schedule: the paper uses Deep SVDD's settings as it describes them: 150 pretraining and 100
  finetuning epochs, Adam lr 1e-4 dropped to 1e-5 after 50 epochs of each phase, weight decay
  1e-6, batch 256. With another ``--epochs`` the phases keep the 60/40 split and the drops
  their phase fractions; at least one epoch always finetunes (with ``--epochs 1`` there is no
  pretraining and Z_C is the mean of the initial encoder). Adam's moments restart at the
  finetuning phase (Deep SVDD trains the two phases with separate optimisers).
* D_L uses the same Adam settings and schedule as R_C/R_N (the paper gives one set).
* Checkpoint selection: pretraining checkpoints have no Z_C and are never "best"
  (validation loss +inf); in finetuning the criterion is L_OC + L_R on held-out normal
  images (Eq. 6 without the adversarial term, which measures D_L as much as E_C).
* Scores in the graph are means, not sums: AS_l / d and AS_r / (C·H·W). A constant factor
  per score, so each score ranks images exactly as the paper's squared norm does, and the
  FP16 graph does not overflow. The choice between the two is made on the squared norms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from adedge.errors import ExportError
from adedge.train.methods.base import CommonConfig, Method, register_method
from adedge.train.nets.conv_ae import ConvDecoder, ConvEncoder, MLPDiscriminator, init_conv_weights
from adedge.train.views import chunks

SCORES = ("AS_l", "AS_r")
CHUNK = 256


@dataclass
class DDRIDConfig(CommonConfig):
    """Defaults are the paper's (Section 4.1, Table 1)."""

    image_size: int = 32
    channels: int = 1
    latent_dim: int | None = None  # None: 128 for grey (MNIST column), 512 for RGB (CIFAR)
    base_channels: int = 64  # Table 1: 64-128-256-512
    max_channels: int | None = None
    disc_widths: list[int] | None = None  # None: [64, 32, 16] grey, [128, 32, 16] RGB
    prior_sigma: float = 0.1  # σ of N(Z_C, σ²I) in Eq. 4
    epochs: int = 250  # 150 pretraining + 100 finetuning
    pretrain_fraction: float = 0.6
    lr: float = 1e-4
    lr_drop_factor: float = 0.1  # 1e-4 -> 1e-5
    pretrain_lr_drop: float = 1 / 3  # after 50 of 150 pretraining epochs
    finetune_lr_drop: float = 0.5  # after 50 of 100 finetuning epochs
    weight_decay: float = 1e-6
    batch_size: int = 256
    gcn_eps: float = 1e-6  # floor of the L1 scale: a blank frame maps to 0, not NaN


def latent_dim_of(config: DDRIDConfig) -> int:
    if config.latent_dim is not None:
        return config.latent_dim
    return 128 if config.channels == 1 else 512


def disc_widths_of(config: DDRIDConfig) -> list[int]:
    if config.disc_widths is not None:
        return list(config.disc_widths)
    return [64, 32, 16] if config.channels == 1 else [128, 32, 16]


def pretrain_epochs(config: DDRIDConfig) -> int:
    """Pretraining epochs: the paper's 60% of the run, leaving at least one to finetune."""
    wanted = int(round(config.pretrain_fraction * config.epochs))
    return min(max(wanted, 0), max(config.epochs - 1, 0))


def phase_lr(config: DDRIDConfig, progress: float, finetuning: bool) -> float:
    """Deep SVDD's two-phase schedule inside each of DDR-ID's two training phases."""
    epoch = progress * config.epochs + 1e-6
    pre = pretrain_epochs(config)
    if finetuning:
        dropped = epoch - pre >= config.finetune_lr_drop * (config.epochs - pre)
    else:
        dropped = epoch >= config.pretrain_lr_drop * pre
    return config.lr * (config.lr_drop_factor if dropped else 1.0)


class GCNMinMax(nn.Module):
    """Global contrast normalisation (L1) per image, then min-max scaling.

    GCN (Deep SVDD's ``global_contrast_normalization(x, 'l1')``): x - mean(x), divided by
    mean |x - mean(x)| over all channels and pixels of the image. Min-max: (g - low) /
    (high - low) with the training set's extremes after GCN (buffers, fitted once).
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("low", torch.tensor(0.0))
        self.register_buffer("high", torch.tensor(1.0))
        self.register_buffer("fitted", torch.tensor(False))

    def gcn(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=(1, 2, 3), keepdim=True)
        scale = centred.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(self.eps)
        return centred / scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.gcn(x) - self.low) / (self.high - self.low)

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor]) -> None:
        low, high = math.inf, -math.inf
        for batch in batches:
            g = self.gcn(batch.float())
            low, high = min(low, float(g.min())), max(high, float(g.max()))
        if not low < high:
            raise ValueError("min-max scaling needs training images with some contrast")
        self.low.fill_(low)
        self.high.fill_(high)
        self.fitted.fill_(True)


class DDRID(nn.Module):
    """Every network Algorithm 1 trains, plus the constants the scores need (buffers)."""

    def __init__(self, config: DDRIDConfig) -> None:
        super().__init__()
        latent = latent_dim_of(config)
        size, channels = config.image_size, config.channels
        widths = (config.base_channels, config.max_channels)
        self.preprocess = GCNMinMax(config.gcn_eps)
        self.encoder_c = ConvEncoder(size, channels, latent, *widths, bias=False)
        self.decoder_c = ConvDecoder(size, channels, latent, *widths)
        self.encoder_n = ConvEncoder(size, channels, latent, *widths, bias=False)
        self.decoder_n = ConvDecoder(size, channels, latent, *widths)
        self.latent_discriminator = MLPDiscriminator(latent, disc_widths_of(config))
        for net in (self.encoder_c, self.decoder_c, self.encoder_n, self.decoder_n):
            init_conv_weights(net)
        self.register_buffer("center", torch.zeros(latent))  # Z_C
        self.register_buffer("center_fixed", torch.tensor(False))
        self.register_buffer("finetune_started", torch.tensor(False))
        self.register_buffer("score_choice", torch.tensor(0))  # index into SCORES

    def reconstruction_parameters(self) -> list[nn.Parameter]:
        nets = (self.encoder_c, self.decoder_c, self.encoder_n, self.decoder_n)
        return [p for net in nets for p in net.parameters()]

    def decompose(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Preprocessed x -> (Z = E_C(x), X_C = D_C(Z), X_N = R_N(x))."""
        z = self.encoder_c(x)
        return z, self.decoder_c(z), self.decoder_n(self.encoder_n(x))


def squared_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-sample squared L2 norm (the paper's ‖·‖² in Eqs. 1-8)."""
    return x.pow(2).flatten(1).sum(dim=1)


class LatentScorer(nn.Module):
    """AS_l (Eq. 7) divided by d: mean over latent dims of (E_C(x) − Z_C)²."""

    def __init__(self, preprocess: GCNMinMax, encoder: ConvEncoder, center: torch.Tensor) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.encoder = encoder
        self.register_buffer("center", center.detach().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.encoder(self.preprocess(images))
        return (z - self.center).pow(2).mean(dim=1)


class ReconstructionScorer(nn.Module):
    """AS_r (Eq. 8) divided by C·H·W: mean over pixels of (R_C(x) − D_C(Z_C))²."""

    def __init__(
        self,
        preprocess: GCNMinMax,
        encoder: ConvEncoder,
        decoder: ConvDecoder,
        template: torch.Tensor,
    ) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.encoder = encoder
        self.decoder = decoder
        self.register_buffer("template", template.detach().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x_c = self.decoder(self.encoder(self.preprocess(images)))
        return (x_c - self.template).pow(2).mean(dim=(1, 2, 3))


@torch.no_grad()
def reconstruction_template(model: DDRID) -> torch.Tensor:
    """D_C(Z_C) with running BatchNorm statistics, (1, C, H, W)."""
    was_training = model.decoder_c.training
    model.decoder_c.eval()
    template = model.decoder_c(model.center[None])
    model.decoder_c.train(was_training)
    return template


@torch.no_grad()
def validation_norms(model: DDRID, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image AS_l and AS_r as the paper writes them (squared norms), in eval mode."""
    was_training = model.training
    model.eval()
    template = reconstruction_template(model)
    latent, recon = [], []
    for part in chunks(images, CHUNK):
        z = model.encoder_c(model.preprocess(part))
        latent.append(squared_norm(z - model.center))
        recon.append(squared_norm(model.decoder_c(z) - template))
    model.train(was_training)
    return torch.cat(latent), torch.cat(recon)


def choose_score(mean_latent: float, mean_recon: float) -> str:
    """Algorithm 2: AS_l if its validation mean is lower than AS_r's, otherwise AS_r."""
    return "AS_l" if mean_latent < mean_recon else "AS_r"


@register_method(
    name="ddrid",
    title="DDR-ID: dual deep reconstruction networks with image decomposition (Lin et al.)",
    paper="shared/papers/ddrid.txt",
    headline_losses=("L_G",),
)
class DDRIDMethod(Method[DDRIDConfig]):
    config_type = DDRIDConfig
    presets: dict[str, dict[str, Any]] = {
        "paper": {},
        # Narrower nets and a short schedule for CPU budgets: same losses and rules.
        "small": {"base_channels": 16, "latent_dim": 64, "batch_size": 128, "epochs": 20},
        # For tests: a step in milliseconds on two CPU cores; lr 1e-3 as tests take tens of steps.
        "tiny": {
            "base_channels": 4,
            "latent_dim": 16,
            "disc_widths": [16, 8],
            "batch_size": 32,
            "epochs": 2,
            "lr": 1e-3,
        },
    }

    def build(self, config: DDRIDConfig, num_classes: int) -> DDRID:
        return DDRID(config)  # one-class: normal sub-class labels are not used

    def make_optimizers(
        self, model: DDRID, config: DDRIDConfig
    ) -> dict[str, torch.optim.Optimizer]:
        decay = config.weight_decay
        return {
            "reconstruction": torch.optim.Adam(
                model.reconstruction_parameters(), config.lr, weight_decay=decay
            ),
            "latent_discriminator": torch.optim.Adam(
                model.latent_discriminator.parameters(), config.lr, weight_decay=decay
            ),
        }

    def epoch_start(
        self,
        model: DDRID,
        config: DDRIDConfig,
        epoch: int,
        training_inputs: Callable[[int], Iterator[torch.Tensor]],
    ) -> None:
        """Fit the min-max constants before training; fix Z_C when finetuning begins."""
        if not bool(model.preprocess.fitted):
            model.preprocess.fit(training_inputs(config.batch_size))
        if epoch >= pretrain_epochs(config) and not bool(model.center_fixed):
            self.refresh_batchnorm(model, training_inputs(config.batch_size))
            self.fix_center(model, training_inputs(config.batch_size))

    @staticmethod
    @torch.no_grad()
    def refresh_batchnorm(model: DDRID, batches: Iterable[torch.Tensor]) -> None:
        """Population BatchNorm statistics of R_C and R_N over the training inputs."""
        nets = (model.encoder_c, model.decoder_c, model.encoder_n, model.decoder_n)
        norms = [m for net in nets for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
        was_training = model.training
        model.train()
        for batch in batches:
            if len(batch) > 1:  # a 1x1 map of one image has no batch variance
                model.decompose(model.preprocess(batch.to(model.center.device)))
        model.train(was_training)
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum

    @staticmethod
    @torch.no_grad()
    def fix_center(model: DDRID, batches: Iterable[torch.Tensor]) -> None:
        """Z_C = (1/I) Σ_i E_C(X_i) (Section 3.2.1), with running BatchNorm statistics."""
        was_training = model.training
        model.eval()
        total, count = torch.zeros_like(model.center), 0
        for batch in batches:
            z = model.encoder_c(model.preprocess(batch.to(model.center.device)))
            total += z.sum(dim=0)
            count += len(z)
        model.train(was_training)
        model.center.copy_(total / count)
        model.center_fixed.fill_(True)

    def train_step(
        self,
        model: DDRID,
        optimizers: dict[str, torch.optim.Optimizer],
        images: torch.Tensor,
        labels: torch.Tensor,
        progress: float,
        config: DDRIDConfig,
    ) -> dict[str, float]:
        if not bool(model.preprocess.fitted):
            raise RuntimeError(
                "DDR-ID's min-max constants are unset: epoch_start must run before training"
            )
        finetuning = bool(model.center_fixed)
        if finetuning and not bool(model.finetune_started):
            for optimizer in optimizers.values():
                optimizer.state.clear()  # a fresh Adam for the finetuning phase
            model.finetune_started.fill_(True)
        lr = phase_lr(config, progress, finetuning)
        for optimizer in optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr
        x = model.preprocess(images)
        step = self.finetune_step if finetuning else self.pretrain_step
        logged = step(model, optimizers, x, config)
        logged.update(lr=lr, phase=float(finetuning))
        return logged

    @staticmethod
    def pretrain_step(
        model: DDRID,
        optimizers: dict[str, torch.optim.Optimizer],
        x: torch.Tensor,
        config: DDRIDConfig,
    ) -> dict[str, float]:
        """Eqs. 1-2: each network reconstructs X alone (separate losses, one joint step)."""
        loss_c = squared_norm(model.decoder_c(model.encoder_c(x)) - x).mean()
        loss_n = squared_norm(model.decoder_n(model.encoder_n(x)) - x).mean()
        loss = loss_c + loss_n
        optimizers["reconstruction"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["reconstruction"].step()
        return {
            "L_AE_C": float(loss_c.detach()),
            "L_AE_N": float(loss_n.detach()),
            "L_G": float(loss.detach()),
        }

    @staticmethod
    def finetune_step(
        model: DDRID,
        optimizers: dict[str, torch.optim.Optimizer],
        x: torch.Tensor,
        config: DDRIDConfig,
    ) -> dict[str, float]:
        """Algorithm 1's finetuning iteration: D_L ascends Eq. 4, then R_C, R_N descend Eq. 6."""
        discriminator = model.latent_discriminator
        prior = model.center + config.prior_sigma * torch.randn(
            len(x), model.center.numel(), device=x.device
        )
        with torch.no_grad():
            z_fixed = model.encoder_c(x)
        l_lsc = (
            F.logsigmoid(discriminator(prior)).mean() + F.logsigmoid(-discriminator(z_fixed)).mean()
        )  # Eq. 4: E log D(Z) + E log(1 - D(E_C(X)))
        optimizers["latent_discriminator"].zero_grad(set_to_none=True)
        (-l_lsc).backward()  # ascend
        optimizers["latent_discriminator"].step()

        z, x_c, x_n = model.decompose(x)
        l_oc = squared_norm(z - model.center).mean()  # Eq. 3 (Z_C a constant buffer)
        l_lsc_e = F.logsigmoid(-discriminator(z)).mean()  # log(1 - D_L(E_C(X))), Eq. 4
        l_r = squared_norm(x_c + x_n - x).mean()  # Eq. 5
        loss = l_oc + l_lsc_e + l_r  # Eq. 6
        optimizers["reconstruction"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["reconstruction"].step()
        return {
            "L_OC": float(l_oc.detach()),
            "L_LSC": float(l_lsc.detach()),
            "L_LSC_E": float(l_lsc_e.detach()),
            "L_R": float(l_r.detach()),
            "L_G": float(loss.detach()),
        }

    @torch.no_grad()
    def validation_loss(self, model: DDRID, images: torch.Tensor, labels: torch.Tensor) -> float:
        """L_OC + L_R on held-out normal images; +inf before Z_C exists (never 'best')."""
        if not bool(model.center_fixed):
            return math.inf
        total = 0.0
        for part in chunks(images, CHUNK):
            x = model.preprocess(part)
            z, x_c, x_n = model.decompose(x)
            total += float((squared_norm(z - model.center) + squared_norm(x_c + x_n - x)).sum())
        return total / len(images)

    def prepare_export(
        self, model: DDRID, config: DDRIDConfig, calibration: torch.Tensor
    ) -> dict[str, Any]:
        """Algorithm 2 on held-out normal images: keep the score with the lower mean."""
        if not bool(model.center_fixed):
            raise ExportError(
                "this DDR-ID checkpoint is from the pretraining phase: Z_C is not fixed yet",
                "export best.pt, or train until the finetuning phase has run an epoch",
            )
        latent, recon = validation_norms(model, calibration)
        mean_l, mean_r = float(latent.mean()), float(recon.mean())
        choice = choose_score(mean_l, mean_r)
        model.score_choice.fill_(SCORES.index(choice))
        size = config.channels * config.image_size**2
        return {
            "score": choice,
            "score_rule": (
                "Algorithm 2: AS_l if its mean over held-out normal images is lower than "
                "AS_r's, else AS_r; both as the paper's squared norms (Eqs. 7-8)"
            ),
            "val_images": len(calibration),
            "val_mean_AS_l": mean_l,
            "val_mean_AS_r": mean_r,
            "graph_score": (
                f"the chosen squared norm divided by {latent_dim_of(config)} (AS_l, latent "
                f"dims) or {size} (AS_r, C*H*W): same ranking, FP16-safe"
            ),
            "preprocessing": "GCN-L1 + min-max inside the graph",
            "minmax": [float(model.preprocess.low), float(model.preprocess.high)],
        }

    def inference_module(self, model: DDRID) -> nn.Module:
        """The chosen scorer (AS_l until prepare_export has chosen): E_C (+ D_C) only."""
        if SCORES[int(model.score_choice)] == "AS_r":
            return ReconstructionScorer(
                model.preprocess, model.encoder_c, model.decoder_c, reconstruction_template(model)
            )
        return LatentScorer(model.preprocess, model.encoder_c, model.center)

    def full_model_forward(self, model: DDRID, images: torch.Tensor) -> torch.Tensor:
        """No authors' code: every network Algorithm 1 trains on the test image (R_C, R_N
        and D_L on E_C(x)) and both scores (the paper's Table 6 reports both), then the
        chosen one."""
        z, x_c, _ = model.decompose(model.preprocess(images))
        model.latent_discriminator(z)
        latent = (z - model.center).pow(2).mean(dim=1)
        recon = (x_c - reconstruction_template(model)).pow(2).mean(dim=(1, 2, 3))
        return recon if SCORES[int(model.score_choice)] == "AS_r" else latent
