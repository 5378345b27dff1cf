"""Y-GAN (Ivanovska & Struc): dual latent representations for anomaly detection.

A Y-shaped auto-encoder encodes x twice, z_s = E_s(x) (semantic) and z_r = E_r(x) (residual),
Eq. 1, and decodes x̂ = D(z_s ⊕ z_r), Eq. 2. A latent classifier C learns the normal data's
sub-classes from z_s (L_s, Eq. 6) while a gradient reversal layer makes z_r uninformative
about them (L_r, Eqs. 7-8). A consistency loss re-encodes hybrid reconstructions
D(z_s ⊕ shuffled z_r) and asks E_s to return the same z_s (L_con, Eq. 9). A discriminator D_s
gives the feature-matching loss L_adv (Eq. 4) and trains on L_bce (Eq. 5). Generator loss
Eq. 10 with λ1 = λ5 = 50, the rest 1; discriminator loss Eq. 11; Adam 2e-4, β = (0.5, 0.999).
The anomaly score is s = 1 - max softmax(C(E_s(x))) (Eq. 12): only E_s and C are exported.

Where we differ from the authors' public code (docs/authors-code.md, Y-GAN), following the paper:

* BatchNorm uses running statistics at inference. The authors' BN has
  ``track_running_stats=False``, so a test image's score depends on the rest of its batch;
  a deployed detector scoring one frame at a time cannot work that way.
* The generator gets the adversarial gradient of Eq. 4 through D_s (the authors detach x̂,
  so L_adv trains only D_s).
* L_con is computed once per batch with one random shuffle of z_r, as Section III-A says
  (the code loops 64 shuffles and rescales every hybrid image per sample); we log
  1 - cos rather than -cos (Eq. 9 shifted by a constant: same gradient, non-negative).
* L_D = λ6 L_bce: the λ1 L_rec term of Eq. 11 does not depend on D_s's weights, so it has
  no effect on D_s's update and is only logged.
* The "last convolutional layer" of D_s whose activations feature matching compares is the
  last pyramid block (the 4x4 map before the 1-channel classifier conv), as in the
  GANomaly family this paper builds on; the 1x1 logit alone carries almost no signal.
* Checkpoint selection (``selection``, :mod:`adedge.train.selection`): by default the last
  epoch of the fixed schedule (``last``; ``best.pt`` holds ``last.pt``'s weights). The
  former rule, the lowest held-out L_s (Eq. 6, ``val_loss``), rewards an over-confident
  softmax, which is exactly what flattens the score 1 - max softmax (Eq. 12): on a 6-epoch
  T-shirt-out run it kept epoch 6 (test AUROC 0.663) over epoch 1 (0.808). ``pseudo`` keeps
  the epoch whose score best separates held-out normal images from the same images with
  synthetic defects (label-free). The authors kept the epoch with the best *test* AUC.
* Logged per epoch on the held-out normal images (they select nothing): C's accuracy on
  z_s and on z_r (``val_acc_zs``, ``val_acc_zr``; Eq. 8 drives the latter towards chance,
  which can overshoot below it) and the mean pairwise cosine similarity of the codes
  (``val_cos_zs``, ``val_cos_zr``; near 1 = the codes collapse to one direction).

Ablations (``ablation``, Table V, part B): ``b2`` is the paper's B2, "B1 w/o z_r": one
encoder E whose single entangled code z (2d values, B1's size) feeds the decoder and C;
L_rec, L_adv and L_s (Eqs. 3, 4, 6) remain, L_r and L_con (Eqs. 7-9) go with z_r. The score
is still Eq. 12 on z. ``es_c`` is a further cut the paper does not list: E_s + C trained on
L_s alone (no decoder, no D_s), a plain classifier's confidence.

λ_R follows the DANN ramp 2/(1+exp(-10p)) - 1 over training progress p (Section IV-C).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from adedge.registry import PaperTime
from adedge.train.methods.base import CommonConfig, Method, register_method
from adedge.train.nets.dcgan import (
    DCGANDecoder,
    DCGANEncoder,
    dann_ramp,
    init_dcgan_weights,
    reverse_gradient,
)
from adedge.train.views import chunks


@dataclass
class YGANConfig(CommonConfig):
    """Defaults are the paper's (Section IV-C)."""

    image_size: int = 32
    channels: int = 1
    latent_dim: int = 100  # d, per encoder
    base_channels: int = 64  # DCGAN ngf = ndf
    max_channels: int | None = None  # None: double per block as DCGAN does
    classifier_hidden: int = 30
    lambda_rec: float = 50.0  # λ1
    lambda_adv: float = 1.0  # λ2
    lambda_s: float = 1.0  # λ3
    lambda_r: float = 1.0  # λ4
    lambda_con: float = 50.0  # λ5
    lambda_bce: float = 1.0  # λ6
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    grl_gamma: float = 10.0
    batch_size: int = 64
    epochs: int = 100
    selection: str = "last"  # which epoch is best.pt (module docstring)
    ablation: str = "none"  # none | b2 (Table V) | es_c (E_s + C on L_s only)

    def __post_init__(self) -> None:
        if self.ablation not in ABLATIONS:
            raise ValueError(
                f"unknown Y-GAN ablation '{self.ablation}': choose one of {', '.join(ABLATIONS)}"
            )

    @property
    def code_dim(self) -> int:
        """The size of the code C classifies: d, or B2's single 2d-value code."""
        return 2 * self.latent_dim if self.ablation == "b2" else self.latent_dim


ABLATIONS = ("none", "b2", "es_c")


class LatentClassifier(nn.Module):
    """C: an MLP with one hidden layer of 30 units (Section IV-C)."""

    def __init__(self, latent_dim: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, num_classes)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """D_s: the encoder architecture with a 1-channel head; logits out (sigmoid in the loss)."""

    def __init__(self, config: YGANConfig) -> None:
        super().__init__()
        self.body = DCGANEncoder(
            config.image_size, config.channels, 1, config.base_channels, config.max_channels
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.features(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body.features(x)
        return self.body.head(features).flatten(), features


class YGAN(nn.Module):
    def __init__(self, config: YGANConfig, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError("Y-GAN's latent classifier needs at least two normal sub-classes")
        self.ablation = config.ablation
        args = (config.image_size, config.channels, config.code_dim, config.base_channels)
        self.encoder_s = DCGANEncoder(*args, config.max_channels)
        # the ablations drop z_r (b2) or every network but E_s and C (es_c)
        self.encoder_r: DCGANEncoder | None = None
        self.decoder: DCGANDecoder | None = None
        self.discriminator: Discriminator | None = None
        if config.ablation == "none":
            self.encoder_r = DCGANEncoder(*args, config.max_channels)
        if config.ablation in ("none", "b2"):
            self.decoder = DCGANDecoder(
                config.image_size,
                config.channels,
                2 * config.latent_dim,
                config.base_channels,
                config.max_channels,
            )
            self.discriminator = Discriminator(config)
        self.classifier = LatentClassifier(config.code_dim, config.classifier_hidden, num_classes)
        for net in (self.encoder_s, self.encoder_r, self.decoder, self.discriminator):
            if net is not None:
                init_dcgan_weights(net)

    def generator_parameters(self) -> list[nn.Parameter]:
        nets = (self.encoder_s, self.encoder_r, self.decoder, self.classifier)
        return [p for net in nets if net is not None for p in net.parameters()]


class YGANScorer(nn.Module):
    """The inference subgraph: E_s + C, score s = 1 - max softmax (Eq. 12)."""

    def __init__(self, encoder_s: DCGANEncoder, classifier: LatentClassifier) -> None:
        super().__init__()
        self.encoder_s = encoder_s
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return score_from_code(self.classifier, self.encoder_s(images))


def score_from_code(classifier: LatentClassifier, z_s: torch.Tensor) -> torch.Tensor:
    """Eq. 12: s = 1 - max softmax C(z_s)."""
    return 1.0 - torch.softmax(classifier(z_s), dim=1).max(dim=1).values


def mean_pairwise_cosine(codes: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs i != j of the rows of ``codes`` (N, d):
    (|sum_i u_i|² - N) / (N (N - 1)) with u_i the unit rows; NaN for fewer than two."""
    n = codes.shape[0]
    if n < 2:
        return float("nan")
    units = F.normalize(codes.double(), dim=1)
    return float((units.sum(dim=0).pow(2).sum() - n) / (n * (n - 1)))


def consistency_loss(model: YGAN, z_s: torch.Tensor, z_r: torch.Tensor) -> torch.Tensor:
    """Eq. 9: decode z_s with another sample's z_r and ask E_s to return z_s (1 - cos)."""
    shuffled = z_r[torch.randperm(z_r.shape[0], device=z_r.device)]
    hybrid = model.decoder(torch.cat([z_s, shuffled], dim=1))
    return (1.0 - F.cosine_similarity(z_s, model.encoder_s(hybrid), dim=1)).mean()


@register_method(
    name="ygan",
    title="Y-GAN: dual data representations (Ivanovska & Struc)",
    paper="shared/papers/ygan.txt",
    needs_subclasses=True,
    headline_losses=("L_G",),
    paper_timings=(
        PaperTime(
            2.6,
            "RTX 2080 Ti",
            "Y-GAN, 32x32 (batch 64, includes E_r + decoder)",
            image_size=32,
            label="32x32",
        ),
        PaperTime(
            13.5, "RTX 2080 Ti", "Y-GAN, 256x256 PlantVillage", image_size=256, label="256x256"
        ),
    ),
)
class YGANMethod(Method[YGANConfig]):
    config_type = YGANConfig
    presets: dict[str, dict[str, Any]] = {
        "paper": {},
        # Narrower nets for CPU budgets: same losses, weights and schedule.
        "small": {"base_channels": 32, "epochs": 15},
        # For tests: seconds on two CPU cores.
        "tiny": {"base_channels": 8, "latent_dim": 16, "batch_size": 32, "epochs": 1},
    }

    def build(self, config: YGANConfig, num_classes: int) -> YGAN:
        return YGAN(config, num_classes)

    def make_optimizers(self, model: YGAN, config: YGANConfig) -> dict[str, torch.optim.Optimizer]:
        betas = (config.beta1, config.beta2)
        optimizers = {
            "generator": torch.optim.Adam(model.generator_parameters(), config.lr, betas=betas)
        }
        if model.discriminator is not None:
            optimizers["discriminator"] = torch.optim.Adam(
                model.discriminator.parameters(), config.lr, betas=betas
            )
        return optimizers

    def generator_losses(
        self, model: YGAN, images: torch.Tensor, labels: torch.Tensor, grl_strength: float
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The terms of Eq. 10 the model has (an ablation drops some) and x̂ (None without a
        decoder)."""
        z_s = model.encoder_s(images)
        losses = {"s": F.cross_entropy(model.classifier(z_s), labels)}  # Eq. 6
        if model.decoder is None or model.discriminator is None:  # es_c
            return losses, None
        if model.encoder_r is None:  # b2: D decodes the single code z
            recon = model.decoder(z_s)
        else:
            z_r = model.encoder_r(images)
            recon = model.decoder(torch.cat([z_s, z_r], dim=1))
            losses["r"] = F.cross_entropy(  # Eq. 8
                model.classifier(reverse_gradient(z_r, grl_strength)), labels
            )
            losses["con"] = consistency_loss(model, z_s, z_r)  # Eq. 9
        real_features = model.discriminator.features(images).detach()
        losses["rec"] = (images - recon).abs().mean()  # Eq. 3
        losses["adv"] = F.mse_loss(model.discriminator.features(recon), real_features)  # Eq. 4
        return losses, recon

    def train_step(
        self,
        model: YGAN,
        optimizers: dict[str, torch.optim.Optimizer],
        images: torch.Tensor,
        labels: torch.Tensor,
        progress: float,
        config: YGANConfig,
    ) -> dict[str, float]:
        grl_strength = dann_ramp(progress, config.grl_gamma)
        losses, recon = self.generator_losses(model, images, labels, grl_strength)
        weights = {
            "rec": config.lambda_rec,
            "adv": config.lambda_adv,
            "s": config.lambda_s,
            "r": config.lambda_r,
            "con": config.lambda_con,
        }
        loss_g = sum(weights[k] * v for k, v in losses.items())  # Eq. 10 (its terms present)
        optimizers["generator"].zero_grad(set_to_none=True)
        loss_g.backward()
        optimizers["generator"].step()
        logged = {f"L_{k}": float(v.detach()) for k, v in losses.items()}
        logged.update(L_G=float(loss_g.detach()), lambda_R=grl_strength)
        if model.discriminator is None or recon is None:
            return logged

        real_logits, _ = model.discriminator(images)
        fake_logits, _ = model.discriminator(recon.detach())
        loss_bce = F.binary_cross_entropy_with_logits(  # Eq. 5
            real_logits, torch.ones_like(real_logits)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        optimizers["discriminator"].zero_grad(set_to_none=True)
        (config.lambda_bce * loss_bce).backward()  # Eq. 11 (λ1 L_rec has no D_s gradient)
        optimizers["discriminator"].step()

        logged["L_bce"] = float(loss_bce.detach())
        return logged

    @torch.no_grad()
    def validation_loss(self, model: YGAN, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Held-out L_s (Eq. 6): picks best.pt only with ``selection=val_loss``."""
        z_s = torch.cat([model.encoder_s(part) for part in chunks(images, 512)])
        return float(F.cross_entropy(model.classifier(z_s), labels))

    @torch.no_grad()
    def validation_metrics(
        self, model: YGAN, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, float]:
        """C's accuracy on z_s and z_r and the codes' mean pairwise cosine, held-out normal
        images (z_r's only where the model has E_r)."""
        out: dict[str, float] = {}
        encoders = {"zs": model.encoder_s, "zr": model.encoder_r}
        for key, encoder in encoders.items():
            if encoder is None:
                continue
            codes = torch.cat([encoder(part) for part in chunks(images, 512)])
            predicted = model.classifier(codes).argmax(dim=1)
            out[f"val_acc_{key}"] = float((predicted == labels).float().mean())
            out[f"val_cos_{key}"] = mean_pairwise_cosine(codes)
        return out

    def inference_module(self, model: YGAN) -> YGANScorer:
        return YGANScorer(model.encoder_s, model.classifier)

    def full_model_forward(self, model: YGAN, images: torch.Tensor) -> torch.Tensor:
        """The authors' test(): E_s + C give the score, and E_r plus the decoder, run twice
        (the second time with the residual codes permuted), sit in the same timed region."""
        z_s = model.encoder_s(images)
        if model.encoder_r is not None and model.decoder is not None:
            z_r = model.encoder_r(images)
            model.decoder(torch.cat([z_s, z_r], dim=1))
            model.decoder(torch.cat([z_s, torch.roll(z_r, 1, dims=0)], dim=1))
        elif model.decoder is not None:
            model.decoder(z_s)
        return score_from_code(model.classifier, z_s)
