"""The card (``adedge.json``): everything the runtime needs to score with a bundle, and nothing
it must guess.

Per stage: its graphs (a precision -> file + sha256 map: the FP32 graph always, its
mixed-precision FP16 twin and INT8 (QDQ) graph where exported), the input tensor (size,
colour, mean/std: the runtime normalises with the same function training used), the
outputs, the tiling and how tile scores reduce, its weight in the frame score (the frame's
score is the weighted sum of its stages' scores; IGD's global + local), and how a TensorRT
engine of it is built. Then the threshold and how it was chosen, what the model was trained
on (``training``) and what export measured (``metrics``); those two are carried as written
and never read by the runtime. Where a stage outputs ``amap``, export also calibrates a pixel
threshold (``threshold.pixel``, :class:`PixelThreshold`); a card without one (older exports)
makes no pixel decisions, and an older adedge ignores the field, so the format version stays.

Version 2 (this adedge) holds the graphs in one map per stage. Version 1 named them in flat
fields (``file``/``sha256``, ``fp16_file``/``fp16_sha256``...) and had ``combine``,
``score_normalisation`` and ``normalisation_in_graph``, which no exporter wrote with any
effect; :mod:`adedge.card_reader` upgrades a version-1 card when it reads it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from adedge.errors import AdedgeError
from adedge.formats import ALWAYS_WRITTEN, GRAPHS, Precision
from adedge.preprocess import InputSpec
from adedge.preprocess import tile_count as count_tiles

CARD_NAME = "adedge.json"
FORMAT_VERSION = 2  # the card format this adedge writes and reads (older ones are migrated)
REDUCTIONS = ("max", "mean")
PADDINGS = ("reflect", "constant", "replicate")
TILE_ORDERS = ("row-major",)  # the only order the runtime's tiling plans cut
PRECISIONS = tuple(GRAPHS)  # graphs a stage may carry (fp32 always)
DEFAULT_ENGINE_MAX_BATCH = 8
DEFAULT_WORKSPACE_MIB = 1024

# --- limits of a card: a hand-edited or hostile card fails at once instead of hanging the runtime
# Pixels per side of a network input and of a tiling's resize_to: above any camera frame
# (8K UHD is 7680 x 4320) or network input we serve, yet small enough that one resized
# float32 RGB frame (16384^2 x 3 x 4 B = 3 GiB) is still allocatable. A 100000 x 100000
# tiling made the runtime build a plan of millions of tiles and stall at 1.3 GB.
MAX_SIDE = 16384
# Tiles one frame makes in a tiled stage (rows x cols, counted as runtime/tiling.py's
# plan_tiles counts them, see tile_count): the tiles of a frame are one backend batch and a
# TensorRT engine's max batch. The methods use 64 (CBiGAN 512/64 px) to 225 (IGD 15 x 15);
# 4096 (a 64 x 64 grid) leaves ~18x headroom and keeps a frame's batch of 32 px RGB tiles
# at 48 MiB.
MAX_TILES_PER_FRAME = 4096
MAX_ENGINE_BATCH = MAX_TILES_PER_FRAME  # a tiled stage's engine batch is its tiles per frame
MAX_WORKSPACE_MIB = 1 << 20  # 1 TiB: more than any GPU holds
# input mean/std are in units of the [0, 1] (or [0, 255]) pixel range; these bounds keep
# 1/(255 std) and mean/std finite, normal float32 numbers in preprocessing.
MAX_NORMALISATION = 1e3
MIN_STD = 1e-6
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# A stage name becomes part of file names (engines/<stage>.<sm>...engine): a plain word.
STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class TilingSpec:
    """How a frame becomes the batch of one stage: resize, then tiles in row-major order."""

    resize_to: tuple[int, int]
    tile: int
    stride: int
    padding: str = "reflect"
    order: str = "row-major"


@dataclass(frozen=True)
class EngineSpec:
    """How a TensorRT engine of the stage is built on the device.

    ``max_batch``: the optimisation profile's largest batch (a tiled stage: its tiles per
    frame); ``opt_batch``: the batch TensorRT tunes its kernels for; ``workspace_mib``: the
    builder's workspace limit; ``fp32_layers``: the FP32 graph's nodes that must stay FP32
    when a TensorRT without strongly typed networks builds it with the FP16 flag (the FP32
    islands the export's FP16 policy chose). Engines themselves are built on, and bound to,
    each GPU.
    """

    precision: Precision = Precision.FP16
    max_batch: int = DEFAULT_ENGINE_MAX_BATCH
    opt_batch: int = 1
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    fp32_layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class GraphFile:
    """One ONNX graph of a stage: its file (a name inside the bundle folder) and sha256."""

    file: str
    sha256: str


@dataclass(frozen=True)
class StageSpec:
    """One stage: its graphs and how its outputs feed the frame score.

    ``graphs``: precision -> GraphFile; the FP32 graph always, ``fp16`` (the mixed-precision
    twin, written unless ``--precisions`` leaves it out) and ``int8`` where exported.
    ``engine``: how TensorRT engines are built (None: the defaults, with the tiles per frame
    as max batch for a tiled stage). ``nchwc``: whether ONNX Runtime may run the stage's
    convolutions in its blocked NCHWc layout (False where most of their work is in layers
    narrower than a block: :mod:`adedge.export.cpu_layout`); written only when False, so
    older cards read as True and an older adedge reads the card as before.
    """

    name: str
    graphs: dict[str, GraphFile]
    input_name: str
    input: InputSpec
    outputs: tuple[str, ...] = ("score",)
    tiling: TilingSpec | None = None
    reduce: str = "max"
    weight: float = 1.0
    engine: EngineSpec | None = None
    nchwc: bool = True

    @property
    def file(self) -> str:
        """The FP32 graph's file."""
        return self.graphs[ALWAYS_WRITTEN].file

    @property
    def sha256(self) -> str:
        return self.graphs[ALWAYS_WRITTEN].sha256

    def graph(self, precision: str = ALWAYS_WRITTEN) -> GraphFile | None:
        """The stage's graph in ``precision`` (None: not exported)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
        return self.graphs.get(precision)

    def with_graph(self, precision: str, graph: GraphFile) -> StageSpec:
        return replace(self, graphs={**self.graphs, precision: graph})


# Pixel decisions (``threshold.pixel``): a region larger than min_area pixels is an anomaly.
# Default percentile of held-out normal pixel scores, and the floor of the default min_area
# as a share of the frame (a region of 0.05% of a 256 x 256 frame is 33 px).
DEFAULT_PIXEL_PERCENTILE = 99.9
MIN_AREA_FLOOR = 5e-4
MAX_AREA = MAX_SIDE * MAX_SIDE


@dataclass(frozen=True)
class PixelThreshold:
    """The heatmap's own threshold, for stages whose graphs output ``amap``.

    ``value``: the ``percentile`` of held-out normal pixel scores of the frame-size heatmap
    (the Detector's, in the model's raw units). A frame is anomalous when a connected region
    of ``amap > value`` is larger than ``min_area`` pixels, counted in a frame of ``frame``
    (height, width) pixels, the held-out frames' size; the runtime scales it by the area of
    the frames it scores, so it covers the same share of the scene at any resolution. The
    image score waters thin defects down (a scratch glows on the heatmap, not in the mean or
    max over tiles), which is why the map decides too.
    """

    value: float
    percentile: float
    min_area: int
    frame: tuple[int, int]
    detail: str = ""

    def min_area_for(self, frame_hw: tuple[int, int]) -> float:
        """``min_area`` in pixels of a frame of ``frame_hw`` (scaled by the frames' areas)."""
        scale = (frame_hw[0] * frame_hw[1]) / (self.frame[0] * self.frame[1])
        return self.min_area * scale


@dataclass(frozen=True)
class ThresholdSpec:
    """The image threshold and how it was chosen; ``pixel``: the heatmap's threshold where
    export calibrated one (None: cards of older exports, or models without ``amap``)."""

    value: float
    method: str
    detail: str = ""
    pixel: PixelThreshold | None = None

    def to_dict(self) -> dict[str, Any]:
        entry = asdict(self)
        if self.pixel is None:
            entry.pop("pixel")  # an older adedge reads the card exactly as before
        else:
            entry["pixel"]["frame"] = list(self.pixel.frame)
        return entry


@dataclass(frozen=True)
class Card:
    method: str
    stages: tuple[StageSpec, ...]
    threshold: ThresholdSpec
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    adedge_version: str = ""
    format_version: int = FORMAT_VERSION

    def method_warning(self) -> str | None:
        """One line for a card whose method this adedge does not know (None: it knows it).

        Such a bundle still streams, evaluates and benchmarks: the card carries everything
        the runtime needs (graphs, preprocessing, tiling, threshold, the papers' per-image
        times); only what needs the method's code is missing (training, export, and the torch
        rows of `adedge bench --papers`).
        """
        from adedge.registry import METHODS

        if self.method.strip().lower().replace("-", "") in METHODS:
            return None
        return (
            f"the bundle's method '{self.method}' is not one this adedge knows "
            f"({', '.join(sorted(METHODS))}); scoring with the card's graphs, "
            "preprocessing and threshold as written"
        )

    def warn_if_unknown_method(self, log: Callable[[str], None]) -> None:
        """Say :meth:`method_warning` through ``log``, where there is one: every command that
        opens a bundle calls this once."""
        warning = self.method_warning()
        if warning:
            log(f"warning: {warning}")

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        stages = {}
        for stage in self.stages:
            entry = asdict(stage)
            entry.pop("name")
            entry["graphs"] = {p: asdict(g) for p, g in stage.graphs.items()}
            entry["input"] = stage.input.to_dict()
            entry["outputs"] = list(stage.outputs)
            entry["tiling"] = None if stage.tiling is None else asdict(stage.tiling)
            if stage.tiling is not None:
                entry["tiling"]["resize_to"] = list(stage.tiling.resize_to)
            if stage.nchwc:
                entry.pop("nchwc")  # the default: cards read as they did before the field
            if stage.engine is None:
                entry.pop("engine")
            else:
                entry["engine"]["fp32_layers"] = list(stage.engine.fp32_layers)
            stages[stage.name] = entry
        return {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "created": self.created,
            "adedge_version": self.adedge_version,
            "stages": stages,
            "threshold": self.threshold.to_dict(),
            "training": self.training,
            "metrics": self.metrics,
        }


def show_value(value: Any) -> str:
    """A card value for a message: short and on one line."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's str-conversion digit limit
        return "a number too large to show"
    return text if len(text) <= 40 else text[:37] + "..."


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float; None for a non-number, a bool, NaN, ±inf or a too-large int."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def check_threshold(value: Any, where: str) -> float:
    """``value`` as a float if it is a finite number, else one-line AdedgeError naming ``where``
    (e.g. ``--threshold``): a NaN threshold never alarms, +inf never, -inf always."""
    number = finite_number(value)
    if number is None:
        raise AdedgeError(
            f"{where} must be a finite number (got {show_value(value)})",
            "pass a number such as 0.5, or leave it out to use the card's threshold",
        )
    return number


def tile_count(tiling: TilingSpec) -> int:
    """Tiles per frame of a tiled stage, as the runtime's tiling plan cuts them (the same
    geometry, :func:`adedge.preprocess.tile_count`), without building a plan."""
    return count_tiles(tiling.resize_to, tiling.tile, tiling.stride)
