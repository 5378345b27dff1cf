"""PANDA-GAN's anomaly score (Section III-C, Eq. 3) and the module export traces.

Eq. 3 sums three per-image terms, N_com = N_recon + N_C(x) + N_C(x'), and min-max
normalises the sum. The variants (config ``score``), fused into the exported graph:

* ``eq3``: as printed, C(x) + C(x') with C the critic's probability of *real* (Eq. 2,
  "L_c represents Pr(x in X | (x, x'))"). A critic that works gives anomalies a *lower*
  C(x), so this term pulls their score down, against the reconstruction term.
* ``eq3_fake`` (default): the same sum with the critic's probabilities of *fake*,
  (1 - C(x)) + (1 - C(x')). Chosen from the paper, not from test results: Section III-C
  says the sample is anomalous on the far side of a boundary of N_com, the reconstruction
  error rises for anomalies, and Table I names the critic's term an *error* ("Average
  Adv_Err", 0.986-0.994 for PANDA-GAN on Plant Village, beside "Average Rec_Err"): read as
  P(real), an error of 0.99 would be a critic fooled by everything; read as P(fake) on a
  working critic's inputs, it adds to the score in the same direction as the other term.
* ``recon``: the reconstruction term alone (the critic is left out of the graph).

The reconstruction term (config ``rec_norm``) is Eq. 1's norm ||x - x'||_2 per image
(``l2``, default), or the mean squared error over pixels (``mse``, the form before this
option: with it the reconstruction term, ~0.01-0.3, was small beside the critic's terms in
[0, 1], and their instability decided the sum). Both are computed in float32 inside the
graph, so an FP16 graph cannot overflow the sum of squares.
"""

from __future__ import annotations

import torch
from torch import nn

SCORES = ("eq3", "eq3_fake", "recon")
REC_NORMS = ("l2", "mse")
NORM_EPS = 1e-12  # inside the square root: a finite gradient at a perfect reconstruction


def reconstruction_error(
    images: torch.Tensor, recon: torch.Tensor, rec_norm: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-image term (N,), anomaly map (N, 1, H, W)) in float32. The map is the per-pixel
    squared error, mean over channels, whatever the norm; the term is ||x - x'||_2 (``l2``,
    Eq. 1) or the mean of the squared errors (``mse``)."""
    squared = (images.float() - recon.float()).pow(2)
    amap = squared.mean(dim=1, keepdim=True)
    if rec_norm == "mse":
        return amap.mean(dim=(1, 2, 3)), amap
    return torch.sqrt(squared.sum(dim=(1, 2, 3)) + NORM_EPS), amap


def combine(
    rec: torch.Tensor, c_real: torch.Tensor | None, c_fake: torch.Tensor | None, score: str
) -> torch.Tensor:
    """Eq. 3's numerator N_com for the variant ``score`` (module docstring)."""
    if score == "recon":
        return rec
    if c_real is None or c_fake is None:
        raise ValueError(f"PANDA score '{score}' needs the critic's probabilities")
    if score == "eq3":
        return rec + c_real + c_fake
    return rec + (1.0 - c_real) + (1.0 - c_fake)


def critic_probabilities(
    critic: nn.Module, images: torch.Tensor, recon: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C(x), C(x')), the sigmoid probabilities of *real*, float32. One critic pass over x
    and x' together (running BatchNorm statistics: the same numbers as two passes)."""
    both = torch.sigmoid(critic(torch.cat([images, recon])).float()).view(2, -1)
    return both[0], both[1]


class ScoreRange(nn.Module):
    """Eq. 3's min-max constants as buffers (identity until :meth:`set_range`)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("low", torch.tensor(0.0))
        self.register_buffer("span", torch.tensor(1.0))

    def set_range(self, low: float, high: float) -> None:
        span = high - low
        self.low.fill_(low)
        self.span.fill_(span if span > 1e-12 else 1.0)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.low) / self.span


class PANDAScorer(nn.Module):
    """The inference subgraph: the generator (E0_*, D0_*), the critic C (not for ``recon``)
    and Eq. 3's constants; images -> (score (N,), amap (N, 1, H, W))."""

    def __init__(
        self,
        generator: nn.Module,
        critic: nn.Module,
        rng: ScoreRange,
        score: str = "eq3_fake",
        rec_norm: str = "l2",
    ) -> None:
        super().__init__()
        if score not in SCORES or rec_norm not in REC_NORMS:
            raise ValueError(f"unknown PANDA score '{score}' or rec_norm '{rec_norm}'")
        self.generator = generator
        self.critic = None if score == "recon" else critic
        self.score_range = rng
        self.score = score
        self.rec_norm = rec_norm

    def terms(self, images: torch.Tensor, recon: torch.Tensor) -> tuple:
        """(reconstruction term (N,), C(x) (N,), C(x') (N,), amap) for a reconstruction x'
        already computed; the critic's terms are None for ``recon``."""
        rec, amap = reconstruction_error(images, recon, self.rec_norm)
        if self.critic is None:
            return rec, None, None, amap
        c_real, c_fake = critic_probabilities(self.critic, images, recon)
        return rec, c_real, c_fake, amap

    def raw_terms(self, images: torch.Tensor) -> tuple:
        return self.terms(images, self.generator(images).recon)

    def raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N_com before min-max (N,), amap)."""
        rec, c_real, c_fake, amap = self.raw_terms(images)
        return combine(rec, c_real, c_fake, self.score), amap

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw, amap = self.raw(images)
        return self.score_range(raw), amap


def summary(values: torch.Tensor) -> dict[str, float]:
    return {"min": float(values.min()), "max": float(values.max()), "mean": float(values.mean())}


@torch.no_grad()
def calibrate(
    scorer: PANDAScorer, critic: nn.Module, calibration: torch.Tensor, device: torch.device
) -> dict:
    """Fix Eq. 3's min and max on held-out normal inputs (the scorer's own N_com, summed in
    its order) and describe every term (the critic's too, as information, for ``recon``)."""
    raws, recs, reals, fakes = [], [], [], []
    for chunk in calibration.split(256):
        chunk = chunk.to(device)
        recon = scorer.generator(chunk).recon
        rec, c_real, c_fake, _ = scorer.terms(chunk, recon)
        raws.append(combine(rec, c_real, c_fake, scorer.score))
        if c_real is None:
            c_real, c_fake = critic_probabilities(critic, chunk, recon)
        recs.append(rec)
        reals.append(c_real)
        fakes.append(c_fake)
    raw = torch.cat(raws)
    low, high = float(raw.min()), float(raw.max())
    scorer.score_range.set_range(low, high)
    described = {
        "eq3": "recon + C(x) + C(x') (Eq. 3 as printed, C = P(real))",
        "eq3_fake": "recon + (1 - C(x)) + (1 - C(x')) (the critic's P(fake))",
        "recon": "recon only",
    }[scorer.score]
    norm = "||x - x'||_2 (Eq. 1)" if scorer.rec_norm == "l2" else "mean (x - x')^2"
    return {
        "score": f"Eq. 3 min-max of {described}, recon = {norm}, posterior means",
        "score_variant": scorer.score,
        "rec_norm": scorer.rec_norm,
        "score_min": low,
        "score_max": high,
        "calibration_images": int(len(raw)),
        "terms": {
            f"recon_{scorer.rec_norm}": summary(torch.cat(recs)),
            "C_x": summary(torch.cat(reals)),
            "C_x_prime": summary(torch.cat(fakes)),
        },
    }
