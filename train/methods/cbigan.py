"""CBiGAN (Carrara et al.): a Wasserstein BiGAN with a consistency loss on E and G.

An encoder E maps an image to a latent z = E(x), a generator G maps z ~ N(0, I) (64-d) to an
image, and a critic D(x, z) scores (image, latent) pairs. Training plays the Wasserstein
BiGAN game (Eq. 4): E and G minimise L_EG = mean D(x, E(x)) - mean D(G(z), z) (Eq. 5), the
critic minimises L_D = -L_EG (Eq. 6) plus the WGAN-GP gradient penalty of [32]. CBiGAN adds
the consistency loss L_C = L_R(x) + L_R'(z) = ||x - G(E(x))||_1 + ||z - E(G(z))||_1
(Eqs. 10-12) to E and G: L*_EG = (1 - α) L_EG + α L_C (Eq. 13). α = 0 is the plain
Wasserstein BiGAN (the paper's EGBAD baseline, Section V-B).

The anomaly score (Eqs. 7-9) is A(x) = (1 - λ) ||x - G(E(x))||_1
+ λ ||f_D(x, E(x)) - f_D(G(E(x)), E(x))||_1 with λ = 0.1; ``amap`` is the per-pixel
|x - G(E(x))| averaged over channels, so a stream shows where a defect is. Only E, G and the
critic's image trunk are exported (see "f_D" below).

Two modes (Section V-B): ``object`` trains and scores whole images (128x128 in the paper,
optional rotation augmentation); ``texture`` resizes to a 512x512 frame, trains on random
64x64 crops with rotation, and scores every non-overlapping 64x64 tile, the image score being
the max tile score. The generator's output side is the stage's input side (128 / 64).

Decisions where the paper is silent or ambiguous, and where we differ from the authors'
code (docs/authors-code.md, CBiGAN):

* α's direction: Eq. 13 weights L_C by α, and Section V-B makes EGBAD "by setting α = 0";
  the sentence after Eq. 13 says the opposite (α = 1 BiGAN, α = 0 autoencoder). We follow
  the equation: α = 0 is the Wasserstein BiGAN baseline, α = 1 the double autoencoder.
* Architecture: Fig. 3 as the notes describe it (``adedge.train.nets.residual``): residual
  d_blocks of width x (1, 2, 3, 4, 8, 16) (3...48 at the paper's width 3), LeakyReLU 0.2,
  bilinear upsampling, no normalisation. E = trunk -> Dense(16w) -> act -> Dense(64);
  G = Dense(2*2*16w) -> six g_blocks -> 1x1 conv -> tanh; D = image trunk (E's architecture,
  own weights) and a latent branch of 3 x [Dense(512) -> act], concatenated, then
  Dense(16w) -> act -> Dense(1) (linear: a WGAN critic). Every layer has a bias (the authors'
  bias-free layers come from a ``use_bias = not bn`` bug).
* Gradient penalty: Gulrajani et al. [32], which the paper cites: two-sided
  (||grad_(x,z) D|| - 1)^2 with weight 10, evaluated at ε·(x, E(x)) + (1 - ε)·(G(z), z), one
  ε ~ U(0, 1) per sample, i.e. on the line between a real *pair* and a fake *pair*. The
  authors' code interpolates the real image with the fake latent and vice versa (a quirk);
  the joint-input critic's Lipschitz constraint is about pairs.
* Alternation: the paper optimises "alternatively (once G and E, once D)", so ``d_iters``
  defaults to 1 (the authors' later code trains D 5 times per E/G step). The trainer hands
  one batch per call; with ``d_iters`` > 1 the critic steps reuse that batch of real images
  with fresh latents.
* Adam: lr 1e-4 (the paper); β = (0, 0.9) for all three networks, WGAN-GP's setting at the
  same learning rate (the paper does not give β; the authors' code uses (0, 0.9) for D and
  (0, 0.1) for E/G).
* No EMA of E/G (code only, not in the paper); no checkpoint chosen on test AUC (the
  authors'). ``selection`` (:mod:`adedge.train.selection`) defaults to ``pseudo``: the best
  AUROC of held-out normal tiles against the same tiles with synthetic defects (label-free).
  The former rule, the lowest mean A(x) of held-out *normal* images (``val_loss``), follows
  the score's scale, which shrinks as reconstructions sharpen whether or not anomalies stand
  out; and unlike Y-GAN, CBiGAN's detection at our budgets often falls as training goes on, so the
  last epoch (``last``) is the worst of the three: over 3 textures x 2 seeds, 10 epochs,
  test AUROC 0.715 (last), 0.752 (val_loss), 0.773 (pseudo), 0.785 for the best test epoch
  (benchmarks/fidelity/cbigan_selection.md). The synthetic defects there are drawn by the
  same generator as the pseudo-anomalies, which flatters ``pseudo``.
* Training losses are the paper's norms: L_R and L_R' are per-sample **sums** of absolute
  errors, averaged over the batch, so α keeps the meaning the paper tuned it for ("small
  values of α are needed to balance the usually large values of the consistency loss").
* The score uses **means** (FP16 cannot overflow a sum over 512x512x3 pixels). With
  ``score_scale="paper"`` (default) the graph computes A(x) / N_pix exactly:
  (1 - λ)·mean|x - x̂| + λ·(N_feat / N_pix)·mean|f_D(x) - f_D(x̂)|, where N_pix = C·H·W and
  N_feat = the trunk's feature count. Dividing every score by the same constant keeps the
  ranking, AUROC, and max-over-tiles of the paper's sum form. With ``score_scale="mean"`` λ
  weighs the two means directly, which equals the sum form with λ' such that
  λ'/(1 - λ') = λ/(1 - λ)·N_pix/N_feat (64x more weight on features at 128x128x3).
* f_D: the paper calls f_D(x, z) "a feature vector extracted from an intermediate output of
  the discriminator" and follows AnoGAN, whose features are the critic's last hidden layer.
  We take the critic's concatenation layer [trunk(x) flattened, latent_branch(z)], the last
  intermediate output before x and z are mixed. Both terms of Eq. 9 use the same z = E(x),
  so the latent half is identical and cancels exactly: ||f_D(x, z) - f_D(x̂, z)||_1 equals
  the L1 distance of the image-trunk features alone. The scorer therefore holds E, G and the
  image trunk; the latent branch and head are pruned without changing the score (means run
  over the trunk features). The authors' code takes ``discriminator.layers[-65]``, which by
  the notes' reconstruction of Keras's layer order is the first 3x3 convolution of D's image
  branch (a full-resolution pre-activation map); that is unconfirmed (it needs TF 2.4 to
  print the layer name) and reads as an indexing accident, so we do not copy it.
* Rotation: ``rotation_degrees`` None resolves to 45 for textures and 0 for objects (the
  paper rotates only categories whose orientation is irrelevant). The trainer's TrainView
  draws angles in [-r, r]; the paper's texture range is [0°, 45°] clockwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adedge.train.methods.base import CommonConfig, Method, StagePlan, TrainView, register_method
from adedge.train.nets.residual import (
    ResidualDecoder,
    ResidualTrunk,
    init_glorot,
    residual_widths,
)
from adedge.train.views import chunks

MODES = ("object", "texture")
SCORE_SCALES = ("paper", "mean")


@dataclass
class CBiGANConfig(CommonConfig):
    """Defaults are the paper's (Sections IV and V-B); see the module docstring."""

    image_size: int = 128  # whole-image side (objects) or frame side (textures: 512)
    channels: int = 3
    mode: str = "object"  # "object": whole images; "texture": tiles of ``tile``
    tile: int = 64  # texture patch side: training crop and scoring tile
    rotation_degrees: float | None = None  # None: 45 for textures, 0 for objects
    latent_dim: int = 64
    width: int = 3  # the authors' ``channels``: widths 3/6/9/12/24/48
    latent_hidden: int = 512  # the critic's latent branch: 3 x Dense(512)
    negative_slope: float = 0.2
    alpha: float = 1e-4  # Eq. 13 (objects 1e-4, textures 1e-4...1e-5); 0 = plain BiGAN
    gp_weight: float = 10.0  # WGAN-GP λ of [32]
    d_iters: int = 1  # critic updates per E/G update ("once G and E, once D")
    lambda_score: float = 0.1  # Eq. 7's λ
    score_scale: str = "paper"  # "paper": A(x)/N_pix exactly; "mean": λ on per-term means
    lr: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.9
    batch_size: int = 32
    epochs: int = 1000  # not in the paper; the authors ran 200k (later 1.2M) batches of 32
    selection: str = "pseudo"  # which epoch is best.pt (module docstring)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"CBiGAN mode must be one of {MODES}, got '{self.mode}'")
        if self.score_scale not in SCORE_SCALES:
            raise ValueError(f"score_scale must be one of {SCORE_SCALES}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        if self.mode == "texture" and self.image_size % self.tile:
            raise ValueError(
                f"texture frame side {self.image_size} is not a multiple of tile {self.tile}"
            )

    @property
    def input_size(self) -> int:
        """The networks' side: the whole image for objects, one tile for textures."""
        return self.tile if self.mode == "texture" else self.image_size

    @property
    def rotation(self) -> float:
        if self.rotation_degrees is not None:
            return float(self.rotation_degrees)
        return 45.0 if self.mode == "texture" else 0.0


class Encoder(nn.Module):
    """E: residual trunk -> flatten -> Dense(16w) -> act -> Dense(latent)."""

    def __init__(self, config: CBiGANConfig) -> None:
        super().__init__()
        widths = residual_widths(config.width)
        self.trunk = ResidualTrunk(
            config.channels, config.input_size, widths, config.negative_slope
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.trunk.out_features, widths[-1]),
            nn.LeakyReLU(config.negative_slope),
            nn.Linear(widths[-1], config.latent_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class Generator(ResidualDecoder):
    """G: z -> Dense(2*2*16w) -> g_blocks 48, 24, 12, 9, 6, 3 (x w/3) -> 1x1 conv -> tanh."""

    def __init__(self, config: CBiGANConfig) -> None:
        super().__init__(
            config.latent_dim,
            config.channels,
            config.input_size,
            residual_widths(config.width)[::-1],
            config.negative_slope,
        )


class Critic(nn.Module):
    """D(x, z): image trunk f_D and latent branch, concatenated, then a linear-output head."""

    def __init__(self, config: CBiGANConfig) -> None:
        super().__init__()
        widths = residual_widths(config.width)
        slope = config.negative_slope
        self.trunk = ResidualTrunk(config.channels, config.input_size, widths, slope)
        hidden = config.latent_hidden
        self.latent = nn.Sequential(
            nn.Linear(config.latent_dim, hidden),
            nn.LeakyReLU(slope),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(slope),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(slope),
        )
        self.head = nn.Sequential(
            nn.Linear(self.trunk.out_features + hidden, widths[-1]),
            nn.LeakyReLU(slope),
            nn.Linear(widths[-1], 1),
        )

    def features(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """f_D(x, z): the concatenation layer [trunk(x), latent(z)]."""
        return torch.cat([self.trunk(x).flatten(1), self.latent(z)], dim=1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x, z)).squeeze(1)


class CBiGAN(nn.Module):
    def __init__(self, config: CBiGANConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.generator = Generator(config)
        self.critic = Critic(config)
        init_glorot(self)

    def eg_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.generator.parameters()]


def feature_weight(config: CBiGANConfig, trunk: ResidualTrunk) -> float:
    """Weight of the feature mean relative to λ: N_feat / N_pix for the paper's sum form."""
    if config.score_scale == "mean":
        return 1.0
    return trunk.out_features / (config.channels * config.input_size**2)


class CBiGANScorer(nn.Module):
    """The inference subgraph: E + G + the critic's image trunk -> (score (N,), amap (N,1,H,W)).

    score = (1 - λ)·mean|x - x̂| + λ·w·mean|f_D(x) - f_D(x̂)| with x̂ = G(E(x)) (Eqs. 7-9);
    w = N_feat / N_pix makes it the paper's A(x) divided by N_pix (module docstring).
    """

    def __init__(
        self,
        encoder: Encoder,
        generator: Generator,
        trunk: ResidualTrunk,
        lambda_score: float,
        weight: float,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.generator = generator
        self.trunk = trunk
        self.lambda_score = float(lambda_score)
        self.weight = float(weight)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        recon = self.generator(self.encoder(images))
        f_real, f_fake = self.trunk(images), self.trunk(recon)
        return anomaly_score(images, recon, f_real, f_fake, self.lambda_score, self.weight)


def anomaly_score(
    images: torch.Tensor,
    recon: torch.Tensor,
    f_real: torch.Tensor,
    f_fake: torch.Tensor,
    lambda_score: float,
    weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(score, amap) from x, x̂ and their critic features f_D(x), f_D(x̂) (Eqs. 7-9)."""
    amap = (images - recon).abs().mean(dim=1, keepdim=True)
    pixel = amap.flatten(1).mean(dim=1)  # mean over C, H, W (Eq. 8 / N_pix)
    features = (f_real - f_fake).abs().flatten(1).mean(dim=1)
    return (1.0 - lambda_score) * pixel + lambda_score * weight * features, amap


def sample_latent(n: int, config: CBiGANConfig, device: torch.device) -> torch.Tensor:
    return torch.randn(n, config.latent_dim, device=device)


def gradient_penalty(
    critic: nn.Module,
    real: tuple[torch.Tensor, torch.Tensor],
    fake: tuple[torch.Tensor, torch.Tensor],
    eps: torch.Tensor,
) -> torch.Tensor:
    """WGAN-GP [32] on the joint input: mean (||∇_(x̂,ẑ) D(x̂, ẑ)|| - 1)^2.

    (x̂, ẑ) = ε·real + (1 - ε)·fake with one ε per sample and real = (x, E(x)),
    fake = (G(z), z): the line between a real pair and a fake pair.
    """
    (x_real, z_real), (x_fake, z_fake) = real, fake
    e_x = eps.view(-1, *([1] * (x_real.dim() - 1)))
    e_z = eps.view(-1, 1)
    x_hat = (e_x * x_real + (1 - e_x) * x_fake).detach().requires_grad_(True)
    z_hat = (e_z * z_real + (1 - e_z) * z_fake).detach().requires_grad_(True)
    grad_x, grad_z = torch.autograd.grad(
        critic(x_hat, z_hat).sum(), (x_hat, z_hat), create_graph=True
    )
    norm = torch.cat([grad_x.flatten(1), grad_z.flatten(1)], dim=1).norm(dim=1)
    return ((norm - 1.0) ** 2).mean()


def critic_losses(
    model: CBiGAN, images: torch.Tensor, z: torch.Tensor, eps: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Eq. 6 and the gradient penalty; E and G are held fixed (no graph through them)."""
    with torch.no_grad():
        encoded, generated = model.encoder(images), model.generator(z)
    loss_d = -model.critic(images, encoded).mean() + model.critic(generated, z).mean()
    penalty = gradient_penalty(model.critic, (images, encoded), (generated, z), eps)
    return {"D": loss_d, "GP": penalty, "critic": loss_d + model.config.gp_weight * penalty}


def absolute_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a - b||_1 per sample, averaged over the batch (the paper's norm)."""
    return (a - b).abs().flatten(1).sum(dim=1).mean()


def eg_losses(
    model: CBiGAN, images: torch.Tensor, z: torch.Tensor, alpha: float
) -> dict[str, torch.Tensor]:
    """Eq. 5 (L_EG), Eqs. 10-12 (L_R, L_R') and Eq. 13 (L*_EG, the one E and G minimise)."""
    encoded, generated = model.encoder(images), model.generator(z)
    loss_eg = model.critic(images, encoded).mean() - model.critic(generated, z).mean()
    loss_r = absolute_sum(images, model.generator(encoded))
    loss_rz = absolute_sum(z, model.encoder(generated))
    total = (1.0 - alpha) * loss_eg + alpha * (loss_r + loss_rz)
    return {"EG": loss_eg, "R": loss_r, "Rz": loss_rz, "total": total}


def to_tiles(images: torch.Tensor, tile: int) -> torch.Tensor:
    """Non-overlapping tiles, row-major per image: (N, C, H, W) -> (N·H/t·W/t, C, t, t)."""
    n, c, h, w = images.shape
    tiles = images.reshape(n, c, h // tile, tile, w // tile, tile)
    return tiles.permute(0, 2, 4, 1, 3, 5).reshape(-1, c, tile, tile)


@register_method(
    name="cbigan",
    title="CBiGAN: consistency-regularised BiGAN (Carrara et al.)",
    paper="shared/papers/cbigan.txt",
    modes={
        "object": "whole image",
        "texture": "64px tiles, max over tiles; the default for texture: data",
    },
    headline_losses=("L_G",),
)
class CBiGANMethod(Method[CBiGANConfig]):
    config_type = CBiGANConfig
    presets: dict[str, dict[str, Any]] = {
        "paper": {},
        # Same networks (they are small: 3...48 channels), narrower latent branch, CPU budget.
        "small": {"latent_hidden": 256, "epochs": 200},
        # For tests: a train step in well under a second on CPU at 32x32 grey. α keeps the
        # paper's balance α·N_pix ≈ 1e-4·128·128·3 ≈ 5 at 32·32·1 pixels.
        "tiny": {
            "image_size": 32,
            "channels": 1,
            "tile": 32,
            "width": 1,
            "latent_dim": 16,
            "latent_hidden": 32,
            "alpha": 5e-3,
            "epochs": 1,
        },
    }

    def build(self, config: CBiGANConfig, num_classes: int) -> CBiGAN:
        return CBiGAN(config)  # one-class: sub-class labels are not used

    def stage_plan(self, config: CBiGANConfig) -> StagePlan:
        if config.mode == "texture":
            return StagePlan(
                frame_size=config.image_size,
                name="local",
                tile=config.tile,
                stride=config.tile,
                reduce="max",
                view=TrainView(crop=config.tile, rotation_degrees=config.rotation),
            )
        return StagePlan(
            frame_size=config.image_size, view=TrainView(rotation_degrees=config.rotation)
        )

    def mode_for_data(self, kind: str) -> str | None:
        return "texture" if kind == "textures" else "object"

    def make_optimizers(
        self, model: CBiGAN, config: CBiGANConfig
    ) -> dict[str, torch.optim.Optimizer]:
        betas = (config.beta1, config.beta2)
        return {
            "eg": torch.optim.Adam(model.eg_parameters(), config.lr, betas=betas),
            "critic": torch.optim.Adam(model.critic.parameters(), config.lr, betas=betas),
        }

    def critic_step(
        self, model: CBiGAN, optimizer: torch.optim.Optimizer, images: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        n = images.shape[0]
        z = sample_latent(n, model.config, images.device)
        eps = torch.rand(n, device=images.device)
        losses = critic_losses(model, images, z, eps)
        optimizer.zero_grad(set_to_none=True)
        losses["critic"].backward()
        optimizer.step()
        return losses

    def eg_step(
        self, model: CBiGAN, optimizer: torch.optim.Optimizer, images: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        z = sample_latent(images.shape[0], model.config, images.device)
        model.critic.requires_grad_(False)  # D is a fixed function in E/G's step
        try:
            losses = eg_losses(model, images, z, model.config.alpha)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
        finally:
            model.critic.requires_grad_(True)
        return losses

    def train_step(
        self,
        model: CBiGAN,
        optimizers: dict[str, torch.optim.Optimizer],
        images: torch.Tensor,
        labels: torch.Tensor,
        progress: float,
        config: CBiGANConfig,
    ) -> dict[str, float]:
        """``d_iters`` critic updates (Eq. 6 + GP), then one E/G update (Eq. 13)."""
        for _ in range(max(config.d_iters, 1)):
            critic = self.critic_step(model, optimizers["critic"], images)
        eg = self.eg_step(model, optimizers["eg"], images)
        return {
            "L_D": float(critic["D"].detach()),
            "L_GP": float(critic["GP"].detach()),
            "L_critic": float(critic["critic"].detach()),
            "L_EG": float(eg["EG"].detach()),
            "L_R": float(eg["R"].detach()),
            "L_Rz": float(eg["Rz"].detach()),
            "L_G": float(eg["total"].detach()),
        }

    @torch.no_grad()
    def validation_loss(self, model: CBiGAN, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Mean anomaly score A(x) of held-out normal inputs (lower is better).

        Texture frames larger than the network's input are cut into non-overlapping tiles
        and every tile counts (normal data: no tile should look anomalous).
        """
        side = model.config.input_size
        if images.shape[-1] != side:
            images = to_tiles(images, side)
        scorer = self.inference_module(model)
        scores = [scorer(part)[0] for part in chunks(images, 256)]
        return float(torch.cat(scores).mean())

    def inference_module(self, model: CBiGAN) -> CBiGANScorer:
        trunk = model.critic.trunk
        return CBiGANScorer(
            model.encoder,
            model.generator,
            trunk,
            model.config.lambda_score,
            feature_weight(model.config, trunk),
        )

    def full_model_forward(self, model: CBiGAN, images: torch.Tensor) -> torch.Tensor:
        """E, G and the whole critic on (x, E(x)) and (G(E(x)), E(x)): both branches and
        the head, as the authors' scorer evaluates their Keras discriminator model."""
        critic = model.critic
        z = model.encoder(images)
        recon = model.generator(z)
        f_real, f_fake, latent = critic.trunk(images), critic.trunk(recon), critic.latent(z)
        for features in (f_real, f_fake):
            critic.head(torch.cat([features.flatten(1), latent], dim=1))
        weight = feature_weight(model.config, critic.trunk)
        lam = model.config.lambda_score
        return anomaly_score(images, recon, f_real, f_fake, lam, weight)[0]

    def prepare_export(
        self, model: CBiGAN, config: CBiGANConfig, calibration: torch.Tensor
    ) -> dict[str, Any]:
        trunk = model.critic.trunk
        return {
            "score": "A(x)/N_pix (Eqs. 7-9)"
            if config.score_scale == "paper"
            else "means weighted by lambda",
            "lambda": config.lambda_score,
            "feature_weight": feature_weight(config, trunk),
            "f_D": f"critic image trunk, {trunk.out_features} features",
            "mode": config.mode,
        }
