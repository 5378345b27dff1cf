"""What a TensorRT engine build will be, decided without a GPU (docs/architecture.md,
Precision): which graph and typing (:func:`choose_build`), the engine settings and optimisation
profile, the cache key, the engine's file name and folder, and whether a cached engine is fresh.
:mod:`adedge.runtime.backends.engines` runs the build.

Engines are bound to the TensorRT version and the GPU, so bundles ship ONNX and every GPU
builds its own engines, once: ``<bundle>/engines/<stage>.<sm>.<trt>.<precision>.b<max>.engine``
with a JSON sidecar holding the full cache key (sha256 of the ONNX graph it was built from,
compute capability, TensorRT version, precision, max batch). A different key (a re-exported
graph, another GPU or TensorRT, another precision or batch) means a rebuild. A timing cache
per (GPU, TensorRT) sits beside the engines and makes rebuilds fast.

Precision lives in the graph. TensorRT 11 removed the weakly typed ``BuilderFlag.FP16``
(strongly typed mode is always on); TensorRT 10.x has both. So, by :func:`choose_build`:

* FP16 on TensorRT >= 10: a strongly typed network from ``<stage>.fp16.onnx``, whose Casts
  fix every tensor's type: the FP32 islands the export's FP16 policy chose survive exactly;
* FP16 on TensorRT < 10 (JetPack 5's 8.5, the 9.x previews), or when asked to: the FP32
  graph with ``BuilderFlag.FP16``, and the islands' layers (the card's
  ``engine.fp32_layers``, chosen at export by the FP16 policy) pinned to FP32 with
  ``PREFER_PRECISION_CONSTRAINTS`` (TensorRT may otherwise pick FP16 for them);
* FP32: the FP32 graph, strongly typed where available.

Optimisation profile: min batch 1; max = the stage's tiles per frame for a tiled stage (the
tiles of one frame are one batch), else the card's (``--max-batch``, default 8); opt = max
for tiled stages (always full) and 1 for whole-frame stages (a live camera scores one frame
at a time).

Nothing here imports ``tensorrt``, torch or onnx.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adedge.bundle import (
    DEFAULT_ENGINE_MAX_BATCH,
    DEFAULT_WORKSPACE_MIB,
    EngineSpec,
    StageSpec,
    tile_count,
)
from adedge.errors import AdedgeError
from adedge.formats import ENGINE_PRECISIONS, Precision

ENGINE_DIR = "engines"
STRONGLY_TYPED_SINCE = (10, 0)  # first GA release with NetworkDefinitionCreationFlag.STRONGLY_TYPED
FP16_FLAG_REMOVED_IN = (11, 0)  # TensorRT 11: strongly typed always, BuilderFlag.FP16 gone
ENGINE_FALLBACK_ENV = "ADEDGE_ENGINE_DIR"  # where engines go when the bundle is read-only


def parse_version(text: str) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0, 30); a suffix ends it ('11.0.0b1' -> (11, 0, 0))."""
    match = re.match(r"\s*(\d+(?:\.\d+)*)", str(text))
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


@dataclass(frozen=True)
class BuildPlan:
    """Which graph TensorRT parses and how: ``graph`` is the card precision of the ONNX file."""

    precision: str
    graph: str
    strongly_typed: bool
    fp16_flag: bool

    def describe(self) -> str:
        how = "strongly typed" if self.strongly_typed else "weakly typed"
        flag = " + BuilderFlag.FP16" if self.fp16_flag else ""
        return f"{self.precision} engine from the {self.graph} graph, {how}{flag}"


def choose_build(
    version: tuple[int, ...],
    precision: str = Precision.FP16,
    weak: bool = False,
    has_fp16_graph: bool = True,
) -> BuildPlan:
    """How to build a ``precision`` engine with TensorRT ``version`` (see module docstring).

    ``weak`` asks for the FP32 graph + ``BuilderFlag.FP16`` on a TensorRT that has both
    (10.x); TensorRT 11 has no such flag, so there it is an error. A bundle exported
    before FP16 graphs existed (``has_fp16_graph`` False) falls back to the flag where
    there is one and must be re-exported for TensorRT 11.
    """
    if precision not in ENGINE_PRECISIONS:
        raise AdedgeError(
            f"engine precision '{precision}' is not supported",
            f"choose one of: {', '.join(ENGINE_PRECISIONS)}",
        )
    strongly = tuple(version) >= STRONGLY_TYPED_SINCE
    if precision == "fp32":
        return BuildPlan("fp32", "fp32", strongly_typed=strongly, fp16_flag=False)
    if (weak or not has_fp16_graph) and tuple(version) >= FP16_FLAG_REMOVED_IN:
        raise AdedgeError(
            f"TensorRT {'.'.join(map(str, version))} has no weakly typed FP16 mode "
            + ("and the bundle has no FP16 graph" if not has_fp16_graph else ""),
            "re-export the bundle with `adedge export --precisions fp32,fp16` (the default; "
            "it writes <stage>.fp16.onnx)"
            if not has_fp16_graph
            else "build from the FP16 graph (the default)",
        )
    weak = weak or not has_fp16_graph
    if strongly and not weak:
        return BuildPlan("fp16", "fp16", strongly_typed=True, fp16_flag=False)
    return BuildPlan("fp16", "fp32", strongly_typed=False, fp16_flag=True)


def tiles_per_frame(stage: StageSpec) -> int | None:
    """How many tiles one frame makes in a tiled stage (None: a whole-frame stage)."""
    return None if stage.tiling is None else tile_count(stage.tiling)


def engine_spec(
    stage: StageSpec,
    precision: str | None = None,
    max_batch: int | None = None,
    workspace_mib: int | None = None,
) -> EngineSpec:
    """The stage's engine settings: the card's, then any overrides; a tiled stage's max
    batch is always its tiles per frame and its opt batch the same."""
    base = stage.engine or EngineSpec()
    tiles = tiles_per_frame(stage)
    if tiles is not None:
        largest, opt = tiles, tiles
    else:
        largest = max_batch or (stage.engine.max_batch if stage.engine else None)
        largest = int(largest or DEFAULT_ENGINE_MAX_BATCH)
        opt = min(base.opt_batch, largest)
    if largest < 1:
        raise AdedgeError(f"max batch must be at least 1 (got {largest})", "e.g. --max-batch 8")
    return EngineSpec(
        precision=precision or base.precision,
        max_batch=largest,
        opt_batch=opt,
        workspace_mib=int(workspace_mib or base.workspace_mib or DEFAULT_WORKSPACE_MIB),
        fp32_layers=base.fp32_layers,
    )


@dataclass(frozen=True)
class ProfileShapes:
    """Input shapes of the optimisation profile: (min, opt, max), each (N, C, H, W)."""

    minimum: tuple[int, int, int, int]
    optimum: tuple[int, int, int, int]
    maximum: tuple[int, int, int, int]


def profile_shapes(stage: StageSpec, spec: EngineSpec) -> ProfileShapes:
    chw = (stage.input.channels, stage.input.height, stage.input.width)
    return ProfileShapes((1, *chw), (spec.opt_batch, *chw), (spec.max_batch, *chw))


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; any difference means a rebuild."""

    onnx_sha256: str
    compute_capability: tuple[int, int]
    trt_version: str
    precision: str
    max_batch: int

    @property
    def sm(self) -> str:
        major, minor = self.compute_capability
        return f"sm{major}{minor}"

    def file_name(self, stage: str) -> str:
        return f"{stage}.{self.sm}.trt{self.trt_version}.{self.precision}.b{self.max_batch}.engine"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_capability"] = list(self.compute_capability)
        return data


def timing_cache_name(compute_capability: tuple[int, int], trt_version: str) -> str:
    major, minor = compute_capability
    return f"timing.sm{major}{minor}.trt{trt_version}.cache"


def engine_dir(bundle: Path) -> Path:
    """``<bundle>/engines`` if it can be written, else ``$ADEDGE_ENGINE_DIR/<bundle name>``
    (or ``~/.cache/adedge/engines/<bundle name>``): a bundle installed read-only still
    gets its engines built on the device."""
    local = Path(bundle) / ENGINE_DIR
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local
    except OSError:
        pass
    root = Path(os.environ.get(ENGINE_FALLBACK_ENV, Path.home() / ".cache/adedge/engines"))
    fallback = root / Path(bundle).resolve().name
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def read_sidecar(engine: Path) -> dict[str, Any] | None:
    sidecar = engine.with_name(engine.name + ".json")
    try:
        return json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_fresh(engine: Path, key: EngineKey) -> bool:
    """An engine file with a sidecar recording exactly ``key``."""
    info = read_sidecar(engine)
    return engine.is_file() and info is not None and info.get("key") == key.to_dict()
