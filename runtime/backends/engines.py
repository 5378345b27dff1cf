"""Build TensorRT engines from a bundle's ONNX graphs, cached on the device
(docs/architecture.md, Precision).

How an engine is built, from which graph, under which cache key and where it is cached is
decided without a GPU in :mod:`adedge.runtime.backends.engine_plan`; this module reaches
TensorRT and the GPU, builds the engine and writes it with its sidecar (:func:`ensure_engine`).

Only the card and the engine plan are imported at module level, and ``tensorrt`` lazily: the
stream on a Jetson builds a missing engine through this module without torch or onnx
installed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adedge.atomic import atomic_path, write_json
from adedge.bundle import StageSpec, precision_graph, sha256_file
from adedge.errors import AdedgeError
from adedge.formats import Precision
from adedge.runtime.backends.engine_plan import (
    BuildPlan,
    EngineKey,
    ProfileShapes,
    choose_build,
    engine_dir,
    engine_spec,
    is_fresh,
    parse_version,
    profile_shapes,
    read_sidecar,
    timing_cache_name,
)

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
