"""Which epoch becomes ``best.pt``: the checkpoint-selection rules, all label-free.

A method's config field ``selection`` names the rule (``--set selection=...``); a config
without the field keeps ``val_loss``. Each rule turns one epoch's validation into a value
where *lower is better*, so the loop keeps one comparison:

* ``last``: the last epoch of the fixed schedule (value ``-epoch``: every epoch improves, so
  ``best.pt`` holds the same weights as ``last.pt``). A criterion computed from the score on
  normal data alone rewards what the score does to normal images, not what separates
  anomalies: Y-GAN's lowest held-out L_s (Eq. 6) rewards an over-confident softmax, which
  compresses the score 1 - max softmax (Eq. 12) of anomalies and normals alike; CBiGAN's and
  IGD's lowest mean normal score drifts with the score's scale, which shrinks early in
  training and says nothing about the gap to anomalies. A fixed schedule chooses nothing.
* ``pseudo``: the highest AUROC of held-out normal inputs against the same inputs with one
  synthetic defect each (:mod:`adedge.defects`: scratch, dark blob, stain, missing patch in
  turn) as pseudo-anomalies (value ``-AUROC``). Label-free, but it measures how well the
  score sees *these* defects: a proxy, to be measured against the real anomalies.
* ``val_loss``: the method's ``validation_loss`` on held-out normal images (its own
  criterion before this rule existed; DDR-ID and PANDA keep it).

The pseudo-anomaly AUROC is logged every epoch (``val_pseudo_auroc``) whatever the rule, so
one run's history shows what each rule would have picked.
"""

from __future__ import annotations

import numpy as np
import torch

from adedge.defects import DEFECT_KINDS, draw_defect
from adedge.preprocess import InputSpec

SELECTIONS = ("last", "pseudo", "val_loss")
PSEUDO_LIMIT = 1024  # held-out inputs (and as many pseudo-anomalies) scored per epoch
PSEUDO_SEED = 20_211  # fixed: the same pseudo-anomalies every epoch and every resume


def check_selection(rule: str) -> str:
    """``rule`` if it is one of :data:`SELECTIONS`; else the ValueError the trainer turns
    into a one-line settings error before any data is loaded."""
    if rule not in SELECTIONS:
        raise ValueError(f"unknown selection '{rule}': choose one of {', '.join(SELECTIONS)}")
    return rule


def selection_value(rule: str, epoch: int, val_loss: float, pseudo_auroc: float) -> float:
    """The epoch's value under ``rule``, lower is better (``epoch`` counts from 1)."""
    if rule == "last":
        return -float(epoch)
    if rule == "pseudo":
        return -pseudo_auroc if np.isfinite(pseudo_auroc) else np.inf
    return val_loss


@torch.no_grad()
def pseudo_anomalies(
    inputs: torch.Tensor, spec: InputSpec, seed: int = PSEUDO_SEED
) -> torch.Tensor:
    """``inputs`` (N, C, H, W), normalised by ``spec``, each with one synthetic defect drawn
    in pixel units and normalised back. Kinds cycle through :data:`DEFECT_KINDS`; input i
    uses ``default_rng(seed + i)``, so the set is the same every time. Tiled stages get one
    defect per tile (the unit the network scores)."""
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = ((inputs.float().cpu() * std + mean) * 255.0).clamp(0, 255)
    images = pixels.permute(0, 2, 3, 1).numpy()  # N, H, W, C (RGB or grey)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        rng = np.random.default_rng(seed + i)
        kind = DEFECT_KINDS[i % len(DEFECT_KINDS)]
        if image.shape[2] == 1:
            out[i, :, :, 0] = draw_defect(np.ascontiguousarray(image[:, :, 0]), kind, rng)[0]
        else:  # the defects' colours are BGR
            out[i] = draw_defect(np.ascontiguousarray(image[:, :, ::-1]), kind, rng)[0][:, :, ::-1]
    defected = torch.from_numpy(out).permute(0, 3, 1, 2) / 255.0
    return ((defected - mean) / std).to(inputs.dtype)
