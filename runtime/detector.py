"""A loaded bundle that turns images into anomaly scores and labels.

Whole-frame stages resize the frame to the stage input; tiled stages (card ``tiling``) cut
the resized frame into tiles that form one batch and reduce the tile scores (max: IGD's
local max-pooling). Stage scores combine as the card says, then the card's normalisation
and threshold apply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adedge.bundle import Bundle, Card, StageSpec, load_bundle
from adedge.errors import BundleError
from adedge.preprocess import bgr_to_rgb, prepare_batch, resize, to_colour
from adedge.runtime.backends import Backend, create_backend


@dataclass
class FrameScore:
    score: float
    anomalous: bool
    latency_ms: dict[str, float] = field(default_factory=dict)


def tile_origins(length: int, tile: int, stride: int) -> list[int]:
    """Tile start offsets covering [0, length); the last tile is flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


class Stage:
    """One ONNX graph of the bundle with its preprocessing."""

    def __init__(self, bundle: Bundle, spec: StageSpec, backend: str, threads: int) -> None:
        self.spec = spec
        self.backend: Backend = create_backend(
            backend, bundle.stage_file(spec), spec, threads=threads
        )

    def prepare(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        """Batch for all images and the number of batch rows each image contributes."""
        tiling = self.spec.tiling
        if tiling is None:
            return prepare_batch(images, self.spec.input), [1] * len(images)
        tiles, counts = [], []
        for image in images:
            image = resize(to_colour(image, self.spec.input.colour), *tiling.resize_to)
            ys = tile_origins(image.shape[0], tiling.tile, tiling.stride)
            xs = tile_origins(image.shape[1], tiling.tile, tiling.stride)
            tiles += [image[y : y + tiling.tile, x : x + tiling.tile] for y in ys for x in xs]
            counts.append(len(ys) * len(xs))
        return prepare_batch(tiles, self.spec.input), counts

    def scores(self, images: list[np.ndarray]) -> tuple[np.ndarray, float, float]:
        start = time.perf_counter()
        batch, counts = self.prepare(images)
        prepared = time.perf_counter()
        raw = self.backend.run(batch)["score"].reshape(-1).astype(np.float64)
        done = time.perf_counter()
        reduce = np.max if self.spec.reduce == "max" else np.mean
        bounds = np.cumsum([0, *counts])
        per_image = np.array(
            [reduce(raw[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        )
        return per_image, (prepared - start) * 1e3, (done - prepared) * 1e3


class Detector:
    """Scores uint8 images (RGB or grey) or BGR frames with every stage of a bundle."""

    def __init__(
        self,
        bundle: Bundle | str | Path,
        backend: str = "onnxruntime",
        threshold: float | None = None,
        threads: int = 0,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        card = self.bundle.card
        if card.combine not in ("sum", "mean"):
            raise BundleError(
                f"card field 'combine' is '{card.combine}'", "use 'sum' or 'mean'; re-export"
            )
        self.stages = [Stage(self.bundle, spec, backend, threads) for spec in card.stages]
        self.threshold = card.threshold.value if threshold is None else float(threshold)
        self.backend_name = backend

    @property
    def card(self) -> Card:
        return self.bundle.card

    def score_images(self, images: list[np.ndarray]) -> tuple[np.ndarray, dict[str, float]]:
        """Scores (N,) for RGB/grey uint8 images, with the batch's per-stage latencies."""
        total = np.zeros(len(images))
        latency = {"preprocess_ms": 0.0, "infer_ms": 0.0}
        for stage in self.stages:
            scores, prep_ms, infer_ms = stage.scores(images)
            total += stage.spec.weight * scores
            latency["preprocess_ms"] += prep_ms
            latency["infer_ms"] += infer_ms
        if self.card.combine == "mean":
            total /= len(self.stages)
        norm = self.card.score_normalisation
        if norm:
            span = float(norm["max"]) - float(norm["min"])
            total = (total - float(norm["min"])) / (span if span > 0 else 1.0)
        return total, latency

    def score_frames(self, frames_bgr: list[np.ndarray]) -> list[FrameScore]:
        scores, latency = self.score_images([bgr_to_rgb(f) for f in frames_bgr])
        share = {k: v / max(len(frames_bgr), 1) for k, v in latency.items()}
        return [FrameScore(float(s), bool(s > self.threshold), dict(share)) for s in scores]
