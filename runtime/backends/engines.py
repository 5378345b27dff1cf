"""Build TensorRT engines from a bundle's ONNX graphs, cached on the device (DESIGN §5).

Engines are bound to the TensorRT version and the GPU, so bundles ship ONNX and every GPU
builds its own engines, once: ``<bundle>/engines/<stage>.<sm>.<trt>.<precision>.b<max>.engine``
with a JSON sidecar holding the full cache key (sha256 of the ONNX graph it was built from,
compute capability, TensorRT version, precision, max batch). A different key (a re-exported
graph, another GPU or TensorRT, another precision or batch) means a rebuild. A timing cache
per (GPU, TensorRT) sits beside the engines and makes rebuilds fast.

Precision lives in the graph. TensorRT 11 removed the weakly typed ``BuilderFlag.FP16``
(strongly typed mode is always on); TensorRT 10.x has both. So, by :func:`choose_build`:

* FP16 on TensorRT >= 10: a strongly typed network from ``<stage>.fp16.onnx``, whose Casts
  fix every tensor's type: the FP32 islands of ``adedge.export.fp16`` survive exactly;
* FP16 on TensorRT < 10 (JetPack 5's 8.5, the 9.x previews), or when asked to: the FP32
  graph with ``BuilderFlag.FP16``, and the islands' layers (the card's
  ``engine.fp32_layers``, chosen at export by the FP16 policy) pinned to FP32 with
  ``PREFER_PRECISION_CONSTRAINTS`` (TensorRT may otherwise pick FP16 for them);
* FP32: the FP32 graph, strongly typed where available.

Optimisation profile: min batch 1; max = the stage's tiles per frame for a tiled stage (the
tiles of one frame are one batch), else the card's (``--max-batch``, default 8); opt = max
for tiled stages (always full) and 1 for whole-frame stages (a live camera scores one frame
at a time).

Only numpy, the card and the tiling plan are imported at module level, and ``tensorrt``
lazily: the stream on a Jetson builds a missing engine through this module without torch
or onnx installed.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adedge.atomic import atomic_path, write_json
from adedge.bundle import (
    DEFAULT_ENGINE_MAX_BATCH,
    DEFAULT_WORKSPACE_MIB,
    EngineSpec,
    StageSpec,
    precision_graph,
    sha256_file,
    tile_count,
)
from adedge.errors import AdedgeError
from adedge.formats import ENGINE_PRECISIONS, Precision

ENGINE_DIR = "engines"
STRONGLY_TYPED_SINCE = (10, 0)  # first GA release with NetworkDefinitionCreationFlag.STRONGLY_TYPED
FP16_FLAG_REMOVED_IN = (11, 0)  # TensorRT 11: strongly typed always, BuilderFlag.FP16 gone
ENGINE_FALLBACK_ENV = "ADEDGE_ENGINE_DIR"  # where engines go when the bundle is read-only

Log = Callable[[str], None]


class TensorRTUnavailable(AdedgeError):
    """TensorRT, a CUDA binding or a GPU is missing: the one error the user sees."""


def unavailable(what: str) -> TensorRTUnavailable:
    return TensorRTUnavailable(
        f"TensorRT engines cannot be used here: {what}",
        "run with --backend onnxruntime (CPU), or install TensorRT and pycuda on the NVIDIA "
        "GPU machine (JetPack ships TensorRT; see deploy/jetson/README.md)",
    )


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or a TensorRTUnavailable naming what is missing."""
    try:
        import tensorrt
    except ImportError as exc:
        raise unavailable(f"the `tensorrt` Python package is not installed ({exc})") from None
    except Exception as exc:  # a broken install (missing libnvinfer) raises OSError & co
        raise unavailable(f"the `tensorrt` package does not load ({exc})") from None
    return tensorrt


def parse_version(text: str) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0, 30); a suffix ends it ('11.0.0b1' -> (11, 0, 0))."""
    match = re.match(r"\s*(\d+(?:\.\d+)*)", str(text))
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


# --- decisions that need no GPU --------------------------------------------------------------


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


# --- the build (needs TensorRT and a GPU) -------------------------------------------------------


def parser_errors(parser: Any) -> list[str]:
    """The ONNX parser's errors, each with the node name and operator where it has them."""
    lines = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        where = []
        node_name = getattr(error, "node_name", None)
        name = node_name() if callable(node_name) else ""
        if name:
            where.append(f"node '{name}'")
        operator = getattr(error, "node_operator", None)
        op = operator() if callable(operator) else ""
        if op:
            where.append(f"op {op}")
        if not where:
            node = error.node() if callable(getattr(error, "node", None)) else -1
            if node >= 0:
                where.append(f"node #{node}")
        prefix = f"{', '.join(where)}: " if where else ""
        lines.append(prefix + error.desc())
    return lines


def _pin_fp32_layers(trt: Any, network: Any, nodes: set[str]) -> int:
    """In a weakly typed FP16 build, keep the layers of the FP32 islands in FP32."""
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        name = layer.name
        if name in nodes or any(name.startswith(node + "_") for node in nodes):
            layer.precision = trt.float32
            for out in range(layer.num_outputs):
                layer.set_output_type(out, trt.float32)
            pinned += 1
    return pinned


@dataclass
class BuildResult:
    engine: Path
    key: EngineKey
    plan: BuildPlan
    seconds: float
    built: bool  # False: a fresh cached engine was reused


def build_serialized(
    trt: Any,
    onnx_path: Path,
    plan: BuildPlan,
    shapes: ProfileShapes,
    input_name: str,
    workspace_mib: int,
    timing_cache: Path,
    fp32_nodes: set[str] | None = None,
) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine (TensorRT 8.5 .. 11 Python API)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if plan.strongly_typed and hasattr(creation, "STRONGLY_TYPED"):
        flags |= 1 << int(creation.STRONGLY_TYPED)
    elif hasattr(creation, "EXPLICIT_BATCH"):  # TensorRT < 10 needs it; ignored by 10
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        details = "; ".join(parser_errors(parser)) or "no details from the parser"
        raise AdedgeError(
            f"TensorRT cannot parse {onnx_path.name}: {details}",
            "use --backend onnxruntime meanwhile, and report the node named here",
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
        if fp32_nodes and _pin_fp32_layers(trt, network, fp32_nodes):
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, shapes.minimum, shapes.optimum, shapes.maximum)
    config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=True)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise AdedgeError(
            f"TensorRT failed to build an engine from {onnx_path.name} (see its log above)",
            "try a larger --workspace, or --backend onnxruntime",
        )
    with atomic_path(timing_cache) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def device_capability(device: int = 0) -> tuple[int, int]:
    """The GPU's compute capability through pycuda, else torch; TensorRTUnavailable if none."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() <= device:
            raise unavailable(f"no NVIDIA GPU #{device} (CUDA sees {cuda.Device.count()})")
        major, minor = cuda.Device(device).compute_capability()
        return int(major), int(minor)
    except ImportError:
        pass
    except TensorRTUnavailable:
        raise
    except Exception as exc:  # pycuda's LogicError/RuntimeError: no driver, no device
        raise unavailable(f"CUDA does not start ({exc})") from None
    try:
        import torch
    except ImportError:
        raise unavailable(
            "neither pycuda nor torch is installed to reach the GPU (pip install pycuda)"
        ) from None
    if not torch.cuda.is_available() or torch.cuda.device_count() <= device:
        raise unavailable("no CUDA GPU is visible (torch.cuda.is_available() is False)")
    major, minor = torch.cuda.get_device_capability(device)
    return int(major), int(minor)


def ensure_engine(
    bundle: Path,
    stage: StageSpec,
    precision: str | None = None,
    max_batch: int | None = None,
    workspace_mib: int | None = None,
    weak: bool = False,
    device: int = 0,
    log: Log | None = None,
    trt: Any = None,
    capability: tuple[int, int] | None = None,
) -> BuildResult:
    """The path of a fresh engine for ``stage`` on this GPU, built if missing or stale."""
    trt = trt or import_tensorrt()
    capability = capability or device_capability(device)
    spec = engine_spec(stage, precision, max_batch, workspace_mib)
    version = str(trt.__version__)
    plan = choose_build(
        parse_version(version),
        spec.precision,
        weak=weak,
        has_fp16_graph=stage.graph(Precision.FP16) is not None,
    )
    onnx_path = precision_graph(Path(bundle), stage, plan.graph)
    key = EngineKey(sha256_file(onnx_path), capability, version, spec.precision, spec.max_batch)
    folder = engine_dir(Path(bundle))
    engine = folder / key.file_name(stage.name)
    if is_fresh(engine, key):
        return BuildResult(engine, key, plan, 0.0, built=False)
    say = log or (lambda _message: None)
    old = read_sidecar(engine)
    reason = "missing" if old is None else "stale (its cache key differs)"
    say(
        f"building the TensorRT engine for stage '{stage.name}' ({plan.describe()}, "
        f"{key.sm}, TensorRT {version}, batch 1..{spec.max_batch}): the engine is {reason}; "
        f"this takes from seconds to several minutes on a Jetson, once: it is cached as "
        f"{engine}"
    )
    started = time.perf_counter()
    fp32_nodes = None
    if plan.fp16_flag:
        fp32_nodes = set(spec.fp32_layers)
        if not fp32_nodes:
            say("the card lists no FP32 layers: TensorRT chooses the precision of every layer")
    data = build_serialized(
        trt,
        onnx_path,
        plan,
        profile_shapes(stage, spec),
        stage.input_name,
        spec.workspace_mib,
        folder / timing_cache_name(capability, version),
        fp32_nodes,
    )
    with atomic_path(engine) as tmp:
        tmp.write_bytes(data)
    seconds = time.perf_counter() - started
    write_json(
        engine.with_name(engine.name + ".json"),
        {
            "key": key.to_dict(),
            "onnx": onnx_path.name,
            "build": plan.describe(),
            "profile": asdict(profile_shapes(stage, spec)),
            "workspace_mib": spec.workspace_mib,
            "seconds": round(seconds, 2),
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    say(f"built {engine.name} in {seconds:.1f}s")
    return BuildResult(engine, key, plan, seconds, built=True)
