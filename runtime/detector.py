"""A loaded bundle that turns images into anomaly scores, labels and (optionally) heatmaps.

Whole-frame stages resize the frame to the stage input. Tiled stages (card ``tiling``) follow
a :class:`~adedge.runtime.tiling.TilingPlan` computed once per frame size: the resized,
padded frame is cut into row-major tiles, the tiles of every image in the call form one
batch (split into chunks when the backend declares a smaller ``max_batch``), and each
image's tile scores reduce by the card's ``reduce`` (max: IGD's local max-pooling). Stages
with an ``amap`` output give a frame-size heatmap: tile maps are stitched with overlap
averaging, whole-frame maps are resized. A frame's score is the weighted sum of its stages'
scores (the card's weights), compared with the card's threshold; heatmaps add up the same
way but stay in the model's raw units: sinks scale them for display. Where the card has a
pixel threshold (``threshold.pixel``), the frame-size heatmap is also cut at it and a frame
whose region above it is larger than the minimum area is anomalous too
(:mod:`adedge.runtime.regions`); its results carry those regions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adedge.bundle import Bundle, Card, StageSpec, TilingSpec, check_threshold, load_bundle
from adedge.errors import AdedgeError, BundleError
from adedge.runtime import frames, kernels
from adedge.runtime.backends import Backend, create_backend
from adedge.runtime.backends.triton import RemoteModel
from adedge.runtime.regions import PixelRule, Region, pixel_rule
from adedge.runtime.tiling import TilingPlan, plan_tiles, reduce_scores, resize_map
from adedge.triton_address import is_triton

AMAP = "amap"
PLAN_CACHE_SIZE = 64
# frame_warnings: an aspect ratio this much off the model's squashes every frame; a frame
# this many times larger (per side) than what the model scores loses the detail defects have
ASPECT_TOLERANCE = 1.3
MAX_SHRINK = 8.0


@dataclass
class FrameScore:
    """One frame's result; ``amap`` is a float32 (H, W) heatmap when the bundle has one.

    ``regions``: the heatmap's regions above the pixel threshold that are larger than the
    minimum area, largest first (each makes the frame anomalous); None where the detector
    makes no pixel decisions (no pixel threshold in the card, or turned off).
    """

    score: float
    anomalous: bool
    latency_ms: dict[str, float] = field(default_factory=dict)
    amap: np.ndarray | None = None
    alarm: bool | None = None  # set by the stream: K consecutive anomalous frames
    regions: list[Region] | None = None


@dataclass
class StageResult:
    """Per-image scores (and frame-size maps) of one stage for one call, with timings."""

    scores: np.ndarray
    maps: list[np.ndarray] | None
    preprocess_ms: float
    infer_ms: float
    aggregate_ms: float


def run_chunked(backend: Backend, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Run ``batch`` in chunks of the backend's ``max_batch`` (if it has one), joined again."""
    return frames.run_in_chunks(backend.run, batch, getattr(backend, "max_batch", None), names)


class Stage:
    """One ONNX graph of the bundle with its preprocessing and aggregation."""

    def __init__(
        self, bundle: Bundle | None, spec: StageSpec, backend: str | Backend, threads: int
    ) -> None:
        self.spec = spec
        self.backend: Backend = (
            create_backend(backend, bundle.stage_file(spec), spec, threads=threads)
            if isinstance(backend, str) and bundle is not None
            else backend
        )
        self.has_map = AMAP in spec.outputs
        self._plans: dict[tuple[int, int], TilingPlan] = {}

    def plan(self, frame_hw: tuple[int, int], tiling: TilingSpec) -> TilingPlan:
        """The tiling plan for this frame size, computed on first use."""
        plan = self._plans.get(frame_hw)
        if plan is None:
            if len(self._plans) >= PLAN_CACHE_SIZE:  # a folder of many sizes: stay bounded
                self._plans.clear()
            plan = self._plans[frame_hw] = plan_tiles(frame_hw, tiling)
        return plan

    def prepare(
        self, images: list[np.ndarray], order: str = "rgb"
    ) -> tuple[np.ndarray, list[TilingPlan | None]]:
        """The batch for all images (channel order ``order``), and each image's plan (None:
        the image is one row): :func:`adedge.runtime.frames.to_batch`."""
        tiling = self.spec.tiling
        plans: list[TilingPlan | None] = [
            None if tiling is None else self.plan(tuple(image.shape[:2]), tiling)
            for image in images
        ]
        return frames.to_batch(images, self.spec.input, plans, order), plans

    def aggregate(
        self,
        out: dict[str, np.ndarray],
        plans: list[TilingPlan | None],
        frame_sizes: list[tuple[int, int]],
        want_maps: bool,
    ) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """Per-image scores (reduced over tiles) and frame-size maps from the batch outputs."""
        rows = np.cumsum([0, *frames.batch_rows(plans)])
        spans = list(zip(plans, rows[:-1], rows[1:], strict=True))
        raw = out["score"].reshape(-1).astype(np.float64)
        if raw.size != rows[-1]:
            raise BundleError(
                f"stage '{self.spec.name}' output 'score' has {raw.size} values for a batch "
                f"of {rows[-1]}",
                "re-export the bundle: the score has one value per batch row",
            )
        how = self.spec.reduce
        scores = np.array(
            [raw[a] if p is None else reduce_scores(raw[a:b], p, how) for p, a, b in spans]
        )
        if not (want_maps and self.has_map):
            return scores, None
        amaps = self.check_amap(out[AMAP], int(rows[-1]))
        maps = []
        for (plan, a, b), size in zip(spans, frame_sizes, strict=True):
            amap = amaps[a] if plan is None else kernels.stitch(amaps[a:b], plan)
            maps.append(resize_map(amap, size))
        return scores, maps

    def check_amap(self, amap: np.ndarray, rows: int) -> np.ndarray:
        """(rows, h, w) from the graph's (rows, 1, h, w) map; any other shape is a bundle
        error (the card promises a one-channel map per batch row)."""
        if amap.ndim == 4 and amap.shape[1] == 1:
            amap = amap[:, 0]
        if amap.ndim != 3 or amap.shape[0] != rows:
            raise BundleError(
                f"stage '{self.spec.name}' output '{AMAP}' has shape {amap.shape}; "
                f"expected ({rows}, 1, h, w)",
                "re-export the bundle: an anomaly map has one channel per batch row",
            )
        return amap

    def run(
        self, images: list[np.ndarray], want_maps: bool = False, order: str = "rgb"
    ) -> StageResult:
        start = time.perf_counter()
        batch, plans = self.prepare(images, order)
        prepared = time.perf_counter()
        names = ["score", AMAP] if want_maps and self.has_map else ["score"]
        out = run_chunked(self.backend, batch, names)
        inferred = time.perf_counter()
        sizes = [tuple(image.shape[:2]) for image in images]
        scores, maps = self.aggregate(out, plans, sizes, want_maps)
        done = time.perf_counter()
        return StageResult(
            scores,
            maps,
            (prepared - start) * 1e3,
            (inferred - prepared) * 1e3,
            (done - inferred) * 1e3,
        )


class Detector:
    """Scores uint8 images (RGB or grey) or BGR frames with every stage of a bundle.

    Latencies per call: ``preprocess_ms``, ``infer_ms``, and ``aggregate_ms`` (tile
    reduction and heatmap stitching) when some stage is tiled or gives a heatmap.

    With ``backend="triton://HOST:PORT/MODEL"`` (gRPC; or ``triton+http://``) the card comes
    from the Triton server and the stages run there; ``bundle`` may then be None, or the same
    model's bundle, run locally while the server is unreachable
    (:mod:`adedge.runtime.backends.triton`).
    """

    def __init__(
        self,
        bundle: Bundle | str | Path | None,
        backend: str = "onnxruntime",
        threshold: float | None = None,
        threads: int = 0,
        min_area: float | None = None,
        pixel: bool = True,
    ) -> None:
        """``min_area``: pixels of the frame as scored that a region above the pixel
        threshold must exceed (None: the card's); ``pixel=False``: no pixel decisions."""
        kernels.configure_from_environment()  # a bad ADEDGE_KERNELS fails before any work
        if is_triton(backend):  # the card and the stages come from the server
            from adedge.runtime.backends.triton import connect

            local = None
            if bundle is not None:  # the local fallback while the server is unreachable
                local = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
            remote = connect(backend, local, threads)
            self.bundle: Bundle | RemoteModel = remote
            card = remote.card
            self.stages = [Stage(None, s, remote.backends[s.name], threads) for s in card.stages]
        else:
            if bundle is None:
                raise AdedgeError("no model bundle given", "pass the bundle folder (--model)")
            self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
            card = self.bundle.card
            self.stages = [Stage(self.bundle, spec, backend, threads) for spec in card.stages]
        self.threshold = (
            card.threshold.value
            if threshold is None
            else check_threshold(threshold, "the threshold override")
        )
        self.pixel: PixelRule | None = pixel_rule(card.threshold.pixel, min_area, pixel)
        self.backend_name = backend

    @property
    def card(self) -> Card:
        return self.bundle.card

    def close(self) -> None:
        """Close a Triton model's connections (a local bundle holds none)."""
        if isinstance(self.bundle, RemoteModel):
            self.bundle.close()

    def trained_on(self) -> str:
        """What the model was trained on, for messages ("unknown" for cards without it)."""
        data = self.card.training.get("data")
        spec = data.get("data") if isinstance(data, dict) else None
        return str(spec) if spec else "unknown training data"

    def frame_warnings(self, frame_hw: tuple[int, int]) -> list[str]:
        """Why frames of this size may not fit the model: an aspect ratio far from what a
        stage scores (every frame squashed) or a much larger frame (detail lost)."""
        height, width = frame_hw
        warnings = []
        for stage in self.stages:
            spec = stage.spec
            if spec.tiling is not None:
                model_h, model_w = spec.tiling.resize_to
            else:
                model_h, model_w = spec.input.height, spec.input.width
            scored = f"stage '{spec.name}' scores them as {model_w}x{model_h}"
            ratio = (width / height) / (model_w / model_h)
            if max(ratio, 1.0 / ratio) > ASPECT_TOLERANCE:
                warnings.append(f"frames are {width}x{height} and {scored}: each is squashed")
            shrink = min(height / model_h, width / model_w)
            if shrink > MAX_SHRINK:
                warnings.append(
                    f"frames are {width}x{height} and {scored}: shrunk {shrink:.0f}x, detail "
                    f"smaller than {shrink:.0f} px is lost"
                )
        return [f"{text} (model trained on {self.trained_on()})" for text in warnings]

    @property
    def has_maps(self) -> bool:
        """Whether some stage outputs an ``amap`` heatmap."""
        return any(stage.has_map for stage in self.stages)

    @property
    def _reports_aggregate(self) -> bool:
        return any(s.has_map or s.spec.tiling is not None for s in self.stages)

    def score_images(self, images: list[np.ndarray]) -> tuple[np.ndarray, dict[str, float]]:
        """Scores (N,) for RGB/grey uint8 images, with the batch's per-stage latencies."""
        scores, _, latency = self._score(images, want_maps=False)
        return scores, latency

    def score_images_with_maps(
        self, images: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray] | None, dict[str, float]]:
        """Scores (N,), one float32 (H, W) heatmap per image (None without ``amap``) and
        the batch's latencies."""
        return self._score(images, want_maps=True)

    def score_frames(self, frames_bgr: list[np.ndarray]) -> list[FrameScore]:
        """One FrameScore per BGR frame; ``amap`` filled when the bundle has heatmaps."""
        scores, maps, latency = self._score(frames_bgr, want_maps=True, order="bgr")
        per_frame: list[np.ndarray | None] = list(maps) if maps else [None] * len(scores)
        started = time.perf_counter()
        regions = [self.regions(m) for m in per_frame]
        if self.pixel is not None and maps:
            latency["aggregate_ms"] = (
                latency.get("aggregate_ms", 0.0) + (time.perf_counter() - started) * 1e3
            )
        share = {k: v / max(len(frames_bgr), 1) for k, v in latency.items()}
        return [
            FrameScore(float(s), bool(s > self.threshold or r), dict(share), m, regions=r)
            for s, m, r in zip(scores, per_frame, regions, strict=True)
        ]

    def regions(self, amap: np.ndarray | None) -> list[Region] | None:
        """The regions of a frame-size heatmap that make its frame anomalous (None: no
        pixel decisions for this detector or this frame)."""
        if self.pixel is None or amap is None:
            return None
        return self.pixel.regions(amap)

    def _score(
        self, images: list[np.ndarray], want_maps: bool, order: str = "rgb"
    ) -> tuple[np.ndarray, list[np.ndarray] | None, dict[str, float]]:
        if not images:
            empty = {"preprocess_ms": 0.0, "infer_ms": 0.0}
            return np.zeros(0), ([] if want_maps and self.has_maps else None), empty
        total = np.zeros(len(images))
        maps: list[np.ndarray] | None = None
        latency = {"preprocess_ms": 0.0, "infer_ms": 0.0, "aggregate_ms": 0.0}
        for stage in self.stages:
            result = stage.run(images, want_maps, order)
            total += stage.spec.weight * result.scores
            if result.maps is not None:
                maps = self._add_maps(maps, result.maps, stage.spec.weight)
            latency["preprocess_ms"] += result.preprocess_ms
            latency["infer_ms"] += result.infer_ms
            latency["aggregate_ms"] += result.aggregate_ms
        if not self._reports_aggregate:
            # nothing to aggregate: keep the stream's stage list to what actually ran
            latency["infer_ms"] += latency.pop("aggregate_ms")
        return total, maps, latency

    @staticmethod
    def _add_maps(
        maps: list[np.ndarray] | None, new: list[np.ndarray], weight: float
    ) -> list[np.ndarray]:
        weighted = [np.float32(weight) * m for m in new]
        if maps is None:
            return weighted
        return [a + b for a, b in zip(maps, weighted, strict=True)]
