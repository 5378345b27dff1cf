"""PANDA-GAN (Barker & Breckon, arXiv 2104.13702): a fine-grained VAE-GAN anomaly detector.

Generator (Section III-A, Fig. 2): a two-level VAE. E0_low maps x to a Gaussian posterior over
a latent map z_low; E0_high maps z_low to one over z_high; D0_high decodes z_high back to
z_low's shape and the residual skip adds z_low before D0_low decodes the image:
x' = D0_low(D0_high(z_high) + z_low). Training-only re-encoders E1_low (x' -> z'_low) and
E1_high (D0_high(z_high) -> z'_high) give the latent losses L_z (Eq. 1), as in GANomaly.
Discriminator C (Section III-B): WS-DAN on a ResNet-50 built from scratch (attention maps,
bilinear attention pooling, 1x1 filter bank, global max pooling, sigmoid): see
:mod:`adedge.train.nets.fgvc`. Generator loss Eq. 1 (+ the VAE's KL terms), critic loss
Eq. 2; score Eq. 3.

Losses (config ``loss``):

* ``pwl`` (default; the paper's best on Plant Village): L_rec = ||x - x'||_2 (Eq. 1).
* ``pl_ps``: L_rec = ||f(x) - f(x')||_2 with f the first 14 layers of a VGG-19-shaped net
  (``perceptual_width`` scales its widths) pretrained self-supervised on the *normal training
  data*. The paper does not name its pretext; we use rotation prediction (Gidaris et al.,
  2018: classify 0/90/180/270° rotations), run by :meth:`PANDAMethod.epoch_start` before the
  first epoch for ``pretext_epochs`` passes over the training inputs with the paper's
  perceptual-model optimiser (SGD, lr 1e-4, momentum 0.9). The net is then frozen (a loss
  network, as in Johnson et al.). Training with ``pl_ps`` before that pretext has run is an
  error, not a silent random loss network.
* ``pl_g``: the same loss with VGG-19's ImageNet weights, which cannot be downloaded here: set
  ``perceptual_weights`` (``--set perceptual_weights=PATH``) to a local state dict in
  torchvision's layout (``features.N.*``); grey inputs are repeated to RGB and given
  ImageNet's normalisation. Without it, building the model is a one-line error.

"Layer 14" is read as module 14 (1-based) of torchvision's ``vgg19().features``, i.e. the
ReLU after conv3_2: "the activations of the 14th layer".

Score (Eq. 3, :mod:`adedge.train.methods.panda_score`): raw = reconstruction term + the
critic's terms, by config ``score``: ``eq3_fake`` (default: the critic's probabilities of
*fake*, 1 - C(x) and 1 - C(x')), ``eq3`` (as printed: C = P(real)) or ``recon``; min-max
normalised: (raw - min) / (max - min) with min and max of raw over held-out normal images
fixed at export by :meth:`PANDAMethod.prepare_export` (buffers, so the exported graph
outputs the normalised score and one frame is scored exactly as in evaluation; before that
the constants are the identity). The reconstruction term is Eq. 1's ||x - x'||_2 per image
(``rec_norm="l2"``, default; ``"mse"``: the mean squared error), in the loss L_rec and in
the score alike. The anomaly map is the per-pixel squared error, mean over channels
(N, 1, H, W), in float32 (FP16 graphs keep the sums in range). Checkpoints written before
these options load as ``score="eq3"``, ``rec_norm="mse"``: what they were trained and
scored with.

No-skip control (``skip=False``): x' = D0_low(D0_high(z_high)), without the residual z_low,
to test whether the skip path (z_low: 1/4 of the input's values per latent channel at the
default 2 low downsamplings) hands anomalies straight to the decoder.

Choices where the paper is silent or ambiguous (ours, documented):

* Latents are spatial maps (VQ-VAE-2's bottom/top codes, which the paper's "top and bottom
  level latent space" and "U-Net like" describe): z_low at 1/2^low_downsamples of the input
  side, z_high a further 1/2^high_downsamples. Widths follow DCGAN (base 64, doubling).
* "·" in x' = D0_low(D0_high(z_high) · E0_low(x)) is the residual sum the text describes
  ("combined residually through skip-connections").
* Eq. 1 lists no KL terms; a VAE needs them: KL(q(z|·) || N(0, I)) for both levels, means over
  latent elements, weight ``lambda_kl`` = 0.01. With mean reductions the ELBO's weight is
  2σ²·L/P (σ the Gaussian decoder's noise, L latent and P pixel elements): 0.01 is σ ≈ 0.17
  in [-1, 1] pixel units at the paper preset's L/P = 1/6 per level (32x32 RGB); weight 1
  would be σ ≈ 1.7, a decoder noise larger than the pixel range. (On digits, small preset,
  6 epochs, weights 1 and 0.01 reached similar held-out reconstruction errors, 0.18 and
  0.19: the choice rests on the ELBO, not on a measured gain.) Eq. 1's own terms keep weight 1.
* L_z compares posterior means: ||mu(E1_low(x')) - mu_low||² and
  ||mu(E1_high(D0_high(z_high))) - mu_high||² (means of squares). Both sides keep their
  gradients (GANomaly's L_enc), so E1 and E0 are trained together by the generator optimiser.
* Generator adversarial term of Eq. 1: the non-saturating -log C(x'); Eq. 2 trains C.
* WS-DAN's attention cropping and dropping (thresholds drawn from U(0.4, 0.6) and
  U(0.2, 0.5) as in WS-DAN) augment both x and x' for C's update, averaging Eq. 2 over the
  raw, cropped and dropped views (``attention_augment``); training only.
* Inference uses the posterior means (no sampling): a frame's score is deterministic.
* Adam β = (0.5, 0.999) (GANomaly family; the paper says only "ADAM"). ``lr`` is the
  generator's 7e-6; the critic's ``lr_d`` defaults to lr·10/7 (the paper's 1e-5) so that
  ``--lr`` scales both. Batch 15. The paper does not give an epoch count: 15 (skip-GANomaly).
* The small and tiny presets raise the learning rates (2e-4 G, ~2.9e-4 C, 1e-2 pretext) and
  shrink the nets: at the paper's rates a CPU-budget run learns almost nothing (tiny nets,
  100 steps on digits: L_rec 0.546 -> 0.539 at 7e-6, -> 0.426 at 2e-4). The paper preset
  keeps the paper's values; ``paper-pl-ps`` and ``small-pl-ps`` select PL_ps.
* The critic scores x and x' in one pass over the concatenated batch (running statistics:
  the same numbers as two passes).
* Checkpoint selection (``selection``): ``val_loss`` as before, the pixel mean squared
  reconstruction error on held-out normal images (the paper names no rule; this one does
  not depend on the critic, whose terms swing from epoch to epoch); ``last`` and ``pseudo``
  as for every method (:mod:`adedge.train.selection`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from adedge.errors import AdedgeError
from adedge.registry import PaperTime
from adedge.train.methods.base import CommonConfig, Method, register_method
from adedge.train.methods.panda_score import (
    NORM_EPS,
    REC_NORMS,
    SCORES,
    PANDAScorer,
    ScoreRange,
    calibrate,
    combine,
)
from adedge.train.nets.dcgan import init_dcgan_weights
from adedge.train.nets.fgvc import FGVCDiscriminator, attention_crop, attention_drop
from adedge.train.nets.vae import (
    ConvDecoder,
    GaussianEncoder,
    kl_to_standard_normal,
    reparameterise,
)

LOSSES = ("pwl", "pl_ps", "pl_g")
PAPER_LR_RATIO_D = 1e-5 / 7e-6  # critic lr / generator lr (Section IV-A)
VGG19_LAYER = 14  # modules of vgg19().features kept: up to the ReLU after conv3_2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class PANDAConfig(CommonConfig):
    """Defaults are the paper's where it gives them (Sections III, IV-A); else ours."""

    image_size: int = 32
    channels: int = 3
    # generator (two-level VAE)
    base_channels: int = 64
    low_downsamples: int = 2
    high_downsamples: int = 1
    latent_low: int = 8
    latent_high: int = 32
    # FGVC critic: ResNet-50 + WS-DAN (M = 32 attention maps) + DFL-CNN filter bank (10)
    backbone_width: int = 64
    backbone_blocks: tuple[int, ...] = (3, 4, 6, 3)
    backbone_bottleneck: bool = True
    attention_maps: int = 32
    filter_bank: int = 10
    attention_augment: bool = True
    # loss variant and its perceptual network
    loss: str = "pwl"
    perceptual_weights: str | None = None
    perceptual_width: int = 64
    pretext_epochs: int = 5
    lr_perceptual: float = 1e-4
    momentum_perceptual: float = 0.9
    # Eq. 1 weights
    lambda_rec: float = 1.0
    lambda_adv: float = 1.0
    lambda_z: float = 1.0
    lambda_kl: float = 0.01  # ours: Eq. 1 has no KL term (see the module docstring)
    # optimisation (Section IV-A)
    lr: float = 7e-6
    lr_d: float | None = None
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 15
    epochs: int = 15
    # score (Eq. 3 variant), reconstruction norm, skip path, checkpoint rule: see the docstring
    score: str = "eq3_fake"
    rec_norm: str = "l2"
    skip: bool = True
    selection: str = "val_loss"

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"unknown PANDA score '{self.score}': choose one of {SCORES}")
        if self.rec_norm not in REC_NORMS:
            raise ValueError(f"unknown PANDA rec_norm '{self.rec_norm}': one of {REC_NORMS}")
        # a JSON list from a card, or "3,4,6,3" from --set, becomes a tuple
        blocks = self.backbone_blocks
        if isinstance(blocks, str):
            blocks = [int(b) for b in blocks.replace("(", "").replace(")", "").split(",") if b]
        self.backbone_blocks = tuple(int(b) for b in blocks)

    @property
    def critic_lr(self) -> float:
        return self.lr_d if self.lr_d is not None else self.lr * PAPER_LR_RATIO_D


_SMALL: dict[str, Any] = {
    "base_channels": 32,
    "backbone_width": 16,
    "backbone_blocks": (1, 1, 1, 1),
    "backbone_bottleneck": False,
    "attention_maps": 16,
    "perceptual_width": 16,
    "pretext_epochs": 3,
    "lr": 2e-4,
    "lr_perceptual": 1e-2,
    "batch_size": 64,
}


# ---------------------------------------------------------------------------- networks


class GeneratorPass(NamedTuple):
    mu_low: torch.Tensor
    logvar_low: torch.Tensor
    mu_high: torch.Tensor
    logvar_high: torch.Tensor
    high_decoded: torch.Tensor  # D0_high(z_high), z_low's shape
    recon: torch.Tensor  # x'


def level_widths(config: PANDAConfig) -> tuple[list[int], list[int]]:
    """Channel widths of the low and high encoders' stride-2 blocks (DCGAN doubling)."""
    a, b, base = config.low_downsamples, config.high_downsamples, config.base_channels
    side = config.image_size
    if a < 1 or b < 1 or side % 2 ** (a + b):
        raise ValueError(
            f"PANDA's generator halves the side {a + b} times: image_size {side} must be "
            f"a multiple of {2 ** (a + b)}"
        )
    return [base * 2**i for i in range(a)], [base * 2 ** (a + i) for i in range(b)]


class PANDAGenerator(nn.Module):
    """E0_low, E0_high, D0_high, D0_low with the residual skip (Fig. 2): the part exported."""

    def __init__(self, config: PANDAConfig) -> None:
        super().__init__()
        low, high = level_widths(config)
        self.e0_low = GaussianEncoder(config.channels, low, config.latent_low, first_bn=False)
        self.e0_high = GaussianEncoder(config.latent_low, high, config.latent_high, True)
        self.d0_high = ConvDecoder(config.latent_high, high[::-1], config.latent_low, tanh=False)
        self.d0_low = ConvDecoder(config.latent_low, low[::-1], config.channels, tanh=True)
        self.skip = config.skip

    def forward(self, x: torch.Tensor, sample: bool = False) -> GeneratorPass:
        """``sample``: reparameterised draws (training); else the posterior means."""
        mu_low, logvar_low = self.e0_low(x)
        z_low = reparameterise(mu_low, logvar_low) if sample else mu_low
        mu_high, logvar_high = self.e0_high(z_low)
        z_high = reparameterise(mu_high, logvar_high) if sample else mu_high
        high_decoded = self.d0_high(z_high)
        # the residual skip carries z_low (skip=False: the no-skip control)
        recon = self.d0_low(high_decoded + z_low if self.skip else high_decoded)
        return GeneratorPass(mu_low, logvar_low, mu_high, logvar_high, high_decoded, recon)


class VGGFeatures(nn.Module):
    """The first 14 modules of VGG-19's ``features`` (torchvision indices, so an ImageNet
    state dict loads by name), widths scaled by ``width``/64; a rotation head for the
    self-supervised pretext (pl_ps). ``imagenet``: map [-1, 1] inputs to RGB with ImageNet
    statistics first (pl_g)."""

    def __init__(self, in_channels: int, width: int, imagenet: bool) -> None:
        super().__init__()
        plan = [width, width, "M", 2 * width, 2 * width, "M", 4 * width, 4 * width]
        layers: list[nn.Module] = []
        c_in = 3 if imagenet else in_channels
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(item), 3, 1, 1), nn.ReLU(inplace=True)]
                c_in = int(item)
        self.features = nn.Sequential(*layers)
        assert len(self.features) == VGG19_LAYER
        self.rotation_head = nn.Linear(c_in, 4)
        self.imagenet = imagenet
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        # -1: not pretrained yet; else the rotation accuracy of the last pretext pass
        self.register_buffer("pretext_accuracy", torch.tensor(-1.0))
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.imagenet:
            x = (x * 0.5 + 0.5).expand(-1, 3, -1, -1) if x.shape[1] == 1 else x * 0.5 + 0.5
            x = (x - self.mean) / self.std
        return self.features(x)

    def rotation_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.rotation_head(self(x).mean(dim=(2, 3)))


class PANDAGAN(nn.Module):
    def __init__(self, config: PANDAConfig) -> None:
        super().__init__()
        if config.loss not in LOSSES:
            raise AdedgeError(
                f"unknown PANDA loss '{config.loss}'", f"choose one of: {', '.join(LOSSES)}"
            )
        self.generator = PANDAGenerator(config)
        low, high = level_widths(config)  # E1_* mirror E0_*
        self.e1_low = GaussianEncoder(config.channels, low, config.latent_low, first_bn=False)
        self.e1_high = GaussianEncoder(config.latent_low, high, config.latent_high, True)
        self.critic = FGVCDiscriminator(
            config.channels,
            config.image_size,
            config.backbone_width,
            tuple(config.backbone_blocks),
            config.backbone_bottleneck,
            config.attention_maps,
            config.filter_bank,
        )
        self.score_range = ScoreRange()
        self.score, self.rec_norm = config.score, config.rec_norm  # fused into the export
        for net in (self.generator, self.e1_low, self.e1_high):
            init_dcgan_weights(net)
        self.perceptual: VGGFeatures | None = None
        if config.loss == "pl_ps":
            self.perceptual = VGGFeatures(config.channels, config.perceptual_width, False)
        elif config.loss == "pl_g":
            self.perceptual = VGGFeatures(config.channels, 64, True)
            load_vgg19_weights(self.perceptual, config.perceptual_weights)
        if self.perceptual is not None:
            self.perceptual.requires_grad_(False)  # a fixed loss network during the GAN

    def generator_parameters(self) -> list[nn.Parameter]:
        nets = (self.generator, self.e1_low, self.e1_high)
        return [p for net in nets for p in net.parameters()]


def load_vgg19_weights(net: VGGFeatures, path: str | None) -> None:
    """Load conv1_1 .. conv3_2 of an ImageNet VGG-19 state dict (torchvision layout)."""
    hint = (
        "save torchvision's vgg19 state dict (keys features.N.weight/bias) to a local file "
        "and pass --set perceptual_weights=PATH, or use loss 'pwl' or 'pl_ps'"
    )
    if not path:
        raise AdedgeError(
            "PANDA loss 'pl_g' needs ImageNet VGG-19 weights, which cannot be downloaded "
            "here, and perceptual_weights is not set",
            hint,
        )
    if not Path(path).is_file():
        raise AdedgeError(f"perceptual_weights file '{path}' does not exist", hint)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    wanted = net.features.state_dict()
    found = {}
    for key in wanted:
        for candidate in (f"features.{key}", key):
            if candidate in state and state[candidate].shape == wanted[key].shape:
                found[key] = state[candidate]
                break
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise AdedgeError(
            f"perceptual_weights '{path}' lacks VGG-19 tensors of the right shape: "
            f"{', '.join('features.' + k for k in missing)}",
            hint,
        )
    net.features.load_state_dict(found)
    net.pretext_accuracy.fill_(0.0)  # ready: not a pretext model, but pretrained


# ------------------------------------------------------------------------------ losses


def reconstruction_loss(
    model: PANDAGAN, images: torch.Tensor, recon: torch.Tensor, config: PANDAConfig
) -> torch.Tensor:
    """Eq. 1's L_rec: PWL on pixels, PL on the perceptual net's layer-14 activations; the
    per-image norm ||a - b||_2 averaged over the batch (``rec_norm="l2"``) or the mean
    squared error (``"mse"``)."""
    if config.loss == "pwl" or model.perceptual is None:
        target, output = images, recon
    else:
        with torch.no_grad():
            target = model.perceptual(images)
        output = model.perceptual(recon)
    if config.rec_norm == "mse":
        return F.mse_loss(output, target)
    squared = (output - target).pow(2).flatten(1).sum(dim=1)
    return torch.sqrt(squared + NORM_EPS).mean()


def bce_logits(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def critic_loss(critic: FGVCDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> tuple:
    """Eq. 2 on one view: -log C(x) - log(1 - C(x')); also returns the attention maps."""
    real_logit, real_attention = critic.forward_with_attention(real)
    fake_logit, fake_attention = critic.forward_with_attention(fake)
    loss = bce_logits(real_logit, True) + bce_logits(fake_logit, False)
    return loss, real_logit, fake_logit, real_attention, fake_attention


def rotation_batch(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The four rotations of every image and their labels 0..3 (k·90°)."""
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels


def pretrain_rotation(
    net: VGGFeatures,
    config: PANDAConfig,
    training_inputs: Callable[[int], Iterator[torch.Tensor]],
) -> list[dict[str, float]]:
    """PL_ps's self-supervised pretext on the normal training inputs: rotation prediction,
    SGD with the paper's perceptual-model lr and momentum. Returns per-pass loss/accuracy."""
    was_training = net.training
    net.train()
    net.requires_grad_(True)
    optimiser = torch.optim.SGD(
        net.parameters(), lr=config.lr_perceptual, momentum=config.momentum_perceptual
    )
    history = []
    for _ in range(config.pretext_epochs):
        loss_sum, correct, seen = 0.0, 0, 0
        for images in training_inputs(config.batch_size):
            rotated, labels = rotation_batch(images)
            logits = net.rotation_logits(rotated)
            loss = F.cross_entropy(logits, labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            loss_sum += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        history.append({"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)})
    net.requires_grad_(False)
    net.train(was_training)
    net.pretext_accuracy.fill_(history[-1]["accuracy"] if history else 0.0)
    return history


# ------------------------------------------------------------------------------ method


@register_method(
    name="panda",
    title="PANDA(-GAN): perceptually aware neural detection of anomalies (Barker & Breckon)",
    paper="shared/papers/panda.txt",
    pretrained_field="perceptual_weights",
    pretrained_weights="a VGG-19 state dict for the general perceptual loss (--set loss=pl_g)",
    headline_losses=("L_G",),
    paper_timings=(  # Table I; the paper names no input size
        PaperTime(
            15.2,
            "Titan X",
            "PANDA-GAN PWL (PANDA Table I, Plant Village)",
            label="Plant Village PWL (Titan X)",
        ),
        PaperTime(20.0, "Titan X", "PANDA-GAN PL_g (PANDA Table I, Plant Village)"),
        PaperTime(20.8, "Titan X", "PANDA-GAN PL_ps (PANDA Table I, Plant Village)"),
        PaperTime(16.8, "Titan X", "PANDA-GAN PWL (PANDA Table I, Laptop X-ray)"),
        PaperTime(6.9, "Titan X", "VAE (PANDA Table I, Plant Village)"),
        PaperTime(28.0, "Titan X", "GANomaly (PANDA Table I, Plant Village)"),
        PaperTime(65.0, "Titan X", "f-AnoGAN (PANDA Table I, Plant Village)"),
        PaperTime(87.0, "Titan X", "EGBAD (PANDA Table I, Plant Village)"),
        PaperTime(123.0, "Titan X", "Skip-GANomaly (PANDA Table I, Plant Village)"),
        PaperTime(7151.0, "Titan X", "AnoGAN (PANDA Table I, Plant Village)"),
    ),
)
class PANDAMethod(Method[PANDAConfig]):
    config_type = PANDAConfig
    presets: dict[str, dict[str, Any]] = {
        "paper": {},
        "paper-pl-ps": {"loss": "pl_ps"},
        # Narrower nets (a ResNet-10-like critic) and larger learning rates for CPU budgets.
        "small": dict(_SMALL),
        "small-pl-ps": {**_SMALL, "loss": "pl_ps"},
        # For tests: well under a second per step on two CPU cores at 32x32.
        "tiny": {
            "base_channels": 8,
            "latent_low": 4,
            "latent_high": 8,
            "backbone_width": 4,
            "backbone_blocks": (1, 1),
            "backbone_bottleneck": False,
            "attention_maps": 4,
            "filter_bank": 4,
            "attention_augment": False,
            "perceptual_width": 8,
            "pretext_epochs": 1,
            "lr": 2e-4,
            "lr_perceptual": 1e-2,
            "batch_size": 16,
            "epochs": 1,
        },
    }

    def build(self, config: PANDAConfig, num_classes: int) -> PANDAGAN:
        return PANDAGAN(config)

    def make_optimizers(
        self, model: PANDAGAN, config: PANDAConfig
    ) -> dict[str, torch.optim.Optimizer]:
        betas = (config.beta1, config.beta2)
        return {
            "generator": torch.optim.Adam(model.generator_parameters(), config.lr, betas=betas),
            "discriminator": torch.optim.Adam(
                model.critic.parameters(), config.critic_lr, betas=betas
            ),
        }

    def epoch_start(
        self,
        model: PANDAGAN,
        config: PANDAConfig,
        epoch: int,
        training_inputs: Callable[[int], Iterator[torch.Tensor]],
    ) -> None:
        """PL_ps: run the self-supervised pretext once, before the first GAN step."""
        perceptual = model.perceptual
        if config.loss == "pl_ps" and perceptual is not None and perceptual.pretext_accuracy < 0:
            model.pretext_history = pretrain_rotation(perceptual, config, training_inputs)

    def generator_losses(
        self, model: PANDAGAN, images: torch.Tensor, config: PANDAConfig
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        out = model.generator(images, sample=True)
        z_low_again, _ = model.e1_low(out.recon)
        z_high_again, _ = model.e1_high(out.high_decoded)
        losses = {
            "rec": reconstruction_loss(model, images, out.recon, config),  # L_rec
            "adv": bce_logits(model.critic(out.recon), True),  # C(x, x') for G: -log C(x')
            "z_low": F.mse_loss(z_low_again, out.mu_low),  # L_z[low]
            "z_high": F.mse_loss(z_high_again, out.mu_high),  # L_z[high]
            "kl_low": kl_to_standard_normal(out.mu_low, out.logvar_low),
            "kl_high": kl_to_standard_normal(out.mu_high, out.logvar_high),
        }
        return losses, out.recon

    def critic_losses(
        self, model: PANDAGAN, images: torch.Tensor, fake: torch.Tensor, config: PANDAConfig
    ) -> dict[str, torch.Tensor]:
        """Eq. 2, averaged over WS-DAN's raw, attention-cropped and attention-dropped views."""
        loss, real_logit, fake_logit, real_att, fake_att = critic_loss(model.critic, images, fake)
        out = {
            "C": loss,
            "C_x": torch.sigmoid(real_logit.detach()).mean(),
            "C_x_prime": torch.sigmoid(fake_logit.detach()).mean(),
        }
        if config.attention_augment:
            theta_c = float(torch.empty(()).uniform_(0.4, 0.6))
            theta_d = float(torch.empty(()).uniform_(0.2, 0.5))
            crop = critic_loss(
                model.critic,
                attention_crop(images, real_att, theta_c),
                attention_crop(fake, fake_att, theta_c),
            )[0]
            drop = critic_loss(
                model.critic,
                attention_drop(images, real_att, theta_d),
                attention_drop(fake, fake_att, theta_d),
            )[0]
            out.update(C_crop=crop, C_drop=drop, C_total=(loss + crop + drop) / 3)
        else:
            out["C_total"] = loss
        return out

    def train_step(
        self,
        model: PANDAGAN,
        optimizers: dict[str, torch.optim.Optimizer],
        images: torch.Tensor,
        labels: torch.Tensor,
        progress: float,
        config: PANDAConfig,
    ) -> dict[str, float]:
        if model.perceptual is not None and float(model.perceptual.pretext_accuracy) < 0:
            raise RuntimeError(
                "PANDA loss 'pl_ps' needs its self-supervised pretext first: the trainer must "
                "call METHOD.epoch_start(model, config, 0, training_inputs) before training"
            )
        model.critic.requires_grad_(False)  # G's step: no gradient into C's weights
        losses, recon = self.generator_losses(model, images, config)
        model.critic.requires_grad_(True)
        loss_g = (  # Eq. 1 with the VAE's KL terms
            config.lambda_rec * losses["rec"]
            + config.lambda_adv * losses["adv"]
            + config.lambda_z * (losses["z_low"] + losses["z_high"])
            + config.lambda_kl * (losses["kl_low"] + losses["kl_high"])
        )
        optimizers["generator"].zero_grad(set_to_none=True)
        loss_g.backward()
        optimizers["generator"].step()

        critic = self.critic_losses(model, images, recon.detach(), config)
        optimizers["discriminator"].zero_grad(set_to_none=True)
        critic["C_total"].backward()
        optimizers["discriminator"].step()

        logged = {f"L_{k}": float(v.detach()) for k, v in losses.items()}
        logged["L_G"] = float(loss_g.detach())
        for key, value in critic.items():
            logged[key if key.startswith("C_x") else f"L_{key}"] = float(value.detach())
        return logged

    @torch.no_grad()
    def validation_loss(self, model: PANDAGAN, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Pixel reconstruction error of held-out normal images (posterior means)."""
        return float(F.mse_loss(model.generator(images).recon, images))

    def inference_module(self, model: PANDAGAN) -> PANDAScorer:
        return PANDAScorer(
            model.generator, model.critic, model.score_range, model.score, model.rec_norm
        )

    def config_from_dict(self, data: dict[str, Any]) -> PANDAConfig:
        """A checkpoint from before ``score`` and ``rec_norm`` existed keeps what it was
        trained and scored with: Eq. 3 as printed on the mean squared error."""
        if "score" not in data:
            data = {**data, "score": "eq3", "rec_norm": data.get("rec_norm", "mse")}
        return super().config_from_dict(data)

    def full_model_forward(self, model: PANDAGAN, images: torch.Tensor) -> torch.Tensor:
        """No authors' code: the generator, the E1 re-encoders on x' (Fig. 2; pruned from
        the export) and the critic on x and x', then Eq. 3."""
        recon = model.generator(images).recon
        model.e1_high(model.e1_low(recon)[0])
        rec, c_real, c_fake, _ = self.inference_module(model).terms(images, recon)
        return model.score_range(combine(rec, c_real, c_fake, model.score))

    @torch.no_grad()
    def prepare_export(
        self, model: PANDAGAN, config: PANDAConfig, calibration: torch.Tensor
    ) -> dict[str, Any]:
        """Eq. 3's min and max: raw scores of held-out normal inputs, stored as buffers."""
        model.eval()
        device = next(model.parameters()).device
        facts = calibrate(self.inference_module(model), model.critic, calibration, device)
        return {**facts, "loss": config.loss, "skip": config.skip}
