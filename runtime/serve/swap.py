"""Checking a bundle before it replaces a running model (``POST /api/models/{name}/load``,
a watched bundle folder that changed).

The candidate is loaded beside the running detector (loading checks the card and every
graph's sha256), then scores the newest frame of each camera that uses the model, in one
batch:

* every score is finite and every heatmap is finite and of the frame's size;
* when the candidate's stages equal the running ones (same graphs, same preprocessing,
  tiling and weights: a redeployed copy), its scores must equal the running model's on the
  same frames within the export parity tolerance (1e-4 x max(1, |score|));
* when the backend runs a reduced precision (FP16, INT8, TensorRT), the candidate's
  decisions on those frames must equal its own FP32 ONNX Runtime graph's (the export's
  parity rule for reduced precision is on ranks over a data set; a handful of live frames
  can only be held to the same side of the threshold).

Without any scored frame yet (cameras offline), a mid-grey frame of the first stage's input
size stands in, so the graph has at least run once. A failure is :class:`Refused` with the
reason; the running model is untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from adedge.runtime.detector import Detector
from adedge.runtime.serve.api_types import ParityFrame, Refused

PARITY_RELATIVE = 1e-4  # DESIGN §4: FP32 export parity, max |d| <= 1e-4 x max(1, |score|)


@dataclass(frozen=True)
class CheckFrame:
    """A recent frame of a camera and the running model's score of it (None: no score)."""

    camera: str
    image: np.ndarray
    old_score: float | None


@dataclass(frozen=True)
class CheckResult:
    frames: list[ParityFrame]
    same_graphs: bool
    max_abs_diff: float | None
    decisions_changed: int


def same_graphs(new: Detector, old: Detector | None) -> bool:
    """The candidate computes what the running model computes (graphs by sha256, and the
    preprocessing, tiling and weights around them)."""
    return old is not None and tuple(new.card.stages) == tuple(old.card.stages)


def stand_in_frame(detector: Detector) -> np.ndarray:
    spec = detector.card.stages[0].input
    return np.full((spec.height, spec.width, 3), 128, np.uint8)


def check_candidate(
    name: str,
    new: Detector,
    old: Detector | None,
    frames: list[CheckFrame],
    reference: Detector | None = None,
) -> CheckResult:
    """Run the checks of the module docstring; raises Refused naming what failed.
    ``reference``: the candidate's own FP32 ONNX Runtime detector, for reduced precision."""
    if not frames:
        frames = [CheckFrame("(stand-in frame)", stand_in_frame(new), None)]
    try:
        results = new.score_frames([frame.image for frame in frames])
    except Exception as error:  # noqa: BLE001 - whatever the graph raises refuses it
        raise Refused(
            f"the new bundle for model '{name}' failed on recent frames: "
            f"{type(error).__name__}: {error}",
            "check that it was exported for these cameras' images",
        ) from None
    identical = same_graphs(new, old)
    checked, diffs, changed = [], [], 0
    for frame, result in zip(frames, results, strict=True):
        where = f"on camera {frame.camera}'s newest frame"
        if not math.isfinite(result.score):
            raise Refused(
                f"the new bundle for model '{name}' gives a score of {result.score} {where}",
                "its graph is broken; re-export it",
            )
        amap = result.amap
        if amap is not None and (
            amap.shape[:2] != frame.image.shape[:2] or not np.isfinite(amap).all()
        ):
            raise Refused(
                f"the new bundle for model '{name}' gives a heatmap that is not finite or "
                f"not of the frame's size {where}",
                "its graph is broken; re-export it",
            )
        if frame.old_score is not None and old is not None:
            diff = abs(result.score - frame.old_score)
            diffs.append(diff)
            if identical and diff > PARITY_RELATIVE * max(1.0, abs(frame.old_score)):
                raise Refused(
                    f"the new bundle for model '{name}' has the running model's graphs but "
                    f"scores {result.score:.6g} instead of {frame.old_score:.6g} {where}",
                    "the backend or the files differ from what the card says; re-export it",
                )
            changed += (result.score > new.threshold) != (frame.old_score > old.threshold)
        checked.append(
            ParityFrame(camera=frame.camera, old_score=frame.old_score, new_score=result.score)
        )
    if reference is not None:
        _check_precision(name, new, reference, frames, [r.score for r in results])
    return CheckResult(checked, identical, max(diffs) if diffs else None, changed)


def _check_precision(
    name: str,
    new: Detector,
    reference: Detector,
    frames: list[CheckFrame],
    scores: list[float],
) -> None:
    expected = reference.score_frames([frame.image for frame in frames])
    for frame, score, fp32 in zip(frames, scores, expected, strict=True):
        if (score > new.threshold) != (fp32.score > new.threshold):
            raise Refused(
                f"the new bundle for model '{name}' decides differently on "
                f"{new.backend_name} ({score:.6g}) than its FP32 graph ({fp32.score:.6g}) "
                f"on camera {frame.camera}'s newest frame (threshold {new.threshold:.6g})",
                "use the FP32 graph or re-export the reduced-precision one",
            )
