"""A Triton model repository from adedge bundles (``adedge triton-repo``): one Triton model
per bundle stage, ``REPO/<bundle>_<stage>/config.pbtxt`` and ``REPO/<model>/<N>/model.onnx``
(plus ``model.plan`` where ``--target smXY`` names a GPU whose TensorRT engine the bundle's
``engines/`` holds, fresh for one of the stage's graphs).

What a config says comes from the ONNX graph (names, Triton data types, dims without the
batch dim) and the card (``max_batch_size``: at least a tiled stage's tiles per frame, the
tiles of one frame being one request; at most a plan's profile max). Every config is parsed
by Triton's own schema and compared with the graph before anything is written.

Versions: exporting again adds version N+1 beside N, never rewriting N; ``config.pbtxt`` is
the model's (Triton has one per model) and is rewritten to carry the newest card. A new
version whose inputs or outputs differ from the existing config's (names, types, dims) is
refused: Triton would serve older versions under a config that no longer fits them, and
clients expecting the old tensors would break; such a graph is a new model (``--name``).

``adedge export --format triton`` ends here too (:func:`add_exported_bundle`): the bundle it
has just written and parity-checked is added as a new version, with default options. The
bundle stays the source of truth (local fallback, parity); the repository is built from it.

Imports onnx, never torch: it runs wherever a bundle and ``adedge[export]``'s onnx are.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from adedge.atomic import write_text
from adedge.bundle import DEFAULT_ENGINE_MAX_BATCH, Bundle, StageSpec, load_bundle, sha256_file
from adedge.errors import AdedgeError
from adedge.outputs import check_creatable
from adedge.runtime.backends.engine_plan import ENGINE_DIR, read_sidecar, tiles_per_frame
from adedge.runtime.triton_config import (
    CONFIG_NAME,
    INSTANCE_KINDS,
    ONNX_FILE,
    ONNX_PLATFORM,
    PLAN_FILE,
    PLAN_PLATFORM,
    TRITON_PYTHON_ENV,
    TensorConfig,
    TritonModel,
    check_model_name,
    config_tensors,
    config_text,
    parse_configs,
)

TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    **{getattr(onnx.TensorProto, t): f"TYPE_{t}" for t in ("INT8", "INT16", "INT32", "INT64")},
    **{getattr(onnx.TensorProto, t): f"TYPE_{t}" for t in ("UINT8", "UINT16", "UINT32", "UINT64")},
}
TARGET = re.compile(r"sm\d{2,3}")
DEFAULT_QUEUE_DELAY_US = 1000  # 1 ms: a fraction of a 30 fps camera's 33 ms frame period
SCHEMA_PROBE = 'name: "adedge_schema_probe"\n'  # the smallest config Triton's schema takes


@dataclass(frozen=True)
class RepoOptions:
    name: str | None = None  # replaces the bundle folder's name (one bundle only)
    max_batch: int | None = None
    preferred: tuple[int, ...] = ()
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    instance_kind: str = "gpu"
    instances: int = 1
    target: str | None = None  # sm87: ship that GPU's TensorRT engine as model.plan


@dataclass(frozen=True)
class StageExport:
    model: TritonModel
    onnx: Path  # the graph written as model.onnx (the one the config describes)
    plan: Path | None


@dataclass(frozen=True)
class Written:
    model: str
    version: int
    folder: Path
    platform: str


def _tensor(value: onnx.ValueInfoProto, graph: Path) -> TensorConfig:
    kind = value.type.tensor_type
    if kind.elem_type not in TRITON_TYPES:
        raise AdedgeError(f"{graph}: tensor '{value.name}' has a type Triton has no name for")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
    if not dims:
        raise AdedgeError(f"{graph}: tensor '{value.name}' has no batch dim")
    if dims[0] != -1:
        raise AdedgeError(
            f"{graph}: tensor '{value.name}' has a fixed batch dim ({dims[0]}); "
            "Triton's dynamic batching needs a dynamic one",
            "re-export the bundle with `adedge export` (it writes a dynamic batch dim)",
        )
    return TensorConfig(value.name, TRITON_TYPES[kind.elem_type], tuple(dims[1:]))


def graph_tensors(path: Path) -> tuple[tuple[TensorConfig, ...], tuple[TensorConfig, ...]]:
    """The graph's (inputs, outputs) as Triton sees them (initialisers are not inputs)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {init.name for init in graph.initializer}
    inputs = tuple(_tensor(v, path) for v in graph.input if v.name not in constants)
    return inputs, tuple(_tensor(v, path) for v in graph.output)


def find_plan(bundle: Bundle, stage: StageSpec, target: str) -> tuple[Path, str, int]:
    """(engine, the card precision of the graph it was built from, its max batch): the
    newest engine for ``target`` whose sidecar names one of the stage's graphs."""
    digests = {graph.sha256: precision for precision, graph in stage.graphs.items()}
    found = []
    for engine in (bundle.path / ENGINE_DIR).glob(f"{stage.name}.{target}.*.engine"):
        key = (read_sidecar(engine) or {}).get("key") or {}
        if key.get("onnx_sha256") in digests and engine.is_file():
            found.append((engine.stat().st_mtime, engine, digests[key["onnx_sha256"]], key))
    if not found:
        raise AdedgeError(
            f"bundle '{bundle.path}' has no {target} TensorRT engine for stage '{stage.name}' "
            "built from its graphs",
            "run `adedge engines build` on that GPU first, or leave out --target (ONNX only)",
        )
    _, engine, precision, key = max(found, key=lambda item: (item[0], str(item[1])))
    return engine, precision, int(key.get("max_batch", 0))


def _batch_sizes(stage: StageSpec, options: RepoOptions, plan_max: int | None) -> tuple[int, ...]:
    """(max_batch_size, *preferred): see the module docstring."""
    tiles = tiles_per_frame(stage)
    default = tiles or (stage.engine.max_batch if stage.engine else DEFAULT_ENGINE_MAX_BATCH)
    largest = options.max_batch or plan_max or default
    where = f"stage '{stage.name}'"
    if tiles is not None and largest < tiles:
        raise AdedgeError(
            f"--max-batch {largest} is below the {tiles} tiles per frame of {where}",
            f"use --max-batch {tiles} or more (one frame's tiles are one request)",
        )
    if plan_max is not None and largest > plan_max:
        raise AdedgeError(
            f"--max-batch {largest} is above the TensorRT engine's max batch {plan_max} ({where})",
            "build the engine with a larger --max-batch, or ask for less",
        )
    preferred = options.preferred or tuple(sorted({tiles or largest, largest}))
    if min(preferred) < 1 or max(preferred) > largest:
        raise AdedgeError(
            f"preferred batch sizes {list(preferred)} must lie in 1..{largest} ({where})",
            "pass --preferred with sizes up to the max batch",
        )
    return (largest, *preferred)


def stage_export(bundle: Bundle, stage: StageSpec, model_name: str, options: RepoOptions):
    plan = precision = plan_max = None
    if options.target is not None:
        plan, precision, plan_max = find_plan(bundle, stage, options.target)
    graph = bundle.graph_file(stage, precision) if precision else bundle.stage_file(stage)
    inputs, outputs = graph_tensors(graph)
    names = {t.name for t in inputs}
    if stage.input_name not in names or not set(stage.outputs) <= {t.name for t in outputs}:
        raise AdedgeError(
            f"{graph}: its tensors do not match the card (input '{stage.input_name}', "
            f"outputs {list(stage.outputs)})",
            "re-export the bundle",
        )
    largest, *preferred = _batch_sizes(stage, options, plan_max)
    model = TritonModel(
        name=check_model_name(model_name),
        platform=PLAN_PLATFORM if plan else ONNX_PLATFORM,
        max_batch_size=largest,
        inputs=inputs,
        outputs=outputs,
        preferred_batch_sizes=tuple(preferred),
        max_queue_delay_us=options.queue_delay_us,
        instance_kind=options.instance_kind,
        instance_count=options.instances,
        card=bundle.card,
        stage=stage.name,
    )
    return StageExport(model, graph, plan)


def check_against_graph(config: dict, model: TritonModel, tiles: int | None) -> None:
    """A parsed config says exactly what the graph and the card do."""
    problems = []
    for kind, tensors in (("input", model.inputs), ("output", model.outputs)):
        if config_tensors(config, kind) != {t.name: t for t in tensors}:
            problems.append(f"its {kind}s differ from the graph's")
    size = int(config.get("max_batch_size", 0))
    if size < (tiles or 1):
        problems.append(f"max_batch_size {size} is below the {tiles or 1} tiles per frame")
    preferred = config.get("dynamic_batching", {}).get("preferred_batch_size", [])
    if not preferred or max(preferred) > size:
        problems.append(f"preferred batch sizes {preferred} do not fit max_batch_size {size}")
    if problems:
        raise AdedgeError(f"config of '{model.name}': " + "; ".join(problems))


def existing_versions(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def _check_options(options: RepoOptions, bundles: Sequence[Path]) -> None:
    if options.instance_kind not in INSTANCE_KINDS:
        raise AdedgeError(f"unknown instance kind '{options.instance_kind}'", "choose gpu or cpu")
    if options.target is not None and not TARGET.fullmatch(options.target):
        raise AdedgeError(f"--target '{options.target}' is not a GPU", "e.g. --target sm87")
    if options.target is not None and options.instance_kind != "gpu":
        raise AdedgeError("a TensorRT plan runs on a GPU only", "leave out --instance-kind cpu")
    if options.instances < 1 or options.queue_delay_us < 0:
        raise AdedgeError("--instances must be >= 1 and --queue-delay-us >= 0")
    if options.name is not None and len(bundles) != 1:
        raise AdedgeError("--name names one bundle's models", "export one bundle per --name")


def plan_repository(bundles: Sequence[Path], options: RepoOptions) -> list[StageExport]:
    """Every model to write, all checked against graph and card, nothing written yet."""
    _check_options(options, bundles)
    exports: list[StageExport] = []
    for path in bundles:
        bundle = load_bundle(path)
        base = options.name or bundle.path.resolve().name
        for stage in bundle.card.stages:
            exports.append(stage_export(bundle, stage, f"{base}_{stage.name}", options))
    names = [e.model.name for e in exports]
    if len(set(names)) != len(names):
        raise AdedgeError(
            f"two bundles give the same model names ({', '.join(sorted(names))})",
            "rename a bundle folder or export them separately with --name",
        )
    return exports


def write_repository(
    bundles: Sequence[Path], out: Path, options: RepoOptions, python: str | None = None
) -> tuple[str, list[Written]]:
    """Write the repository; returns (the schema that checked it, what was written)."""
    exports = plan_repository(bundles, options)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="adedge-triton-") as scratch:
        texts, paths = [], []
        for index, item in enumerate(exports):
            texts.append(config_text(item.model))
            paths.append(Path(scratch) / f"{index}.pbtxt")
            paths[-1].write_text(texts[-1], encoding="utf-8")
        old = [out / e.model.name / CONFIG_NAME for e in exports]
        present = [p for p in old if p.is_file()]
        schema, parsed = parse_configs(paths + present, python)
    previous = dict(zip(present, parsed[len(paths) :], strict=True))
    for item, config, old_path in zip(exports, parsed[: len(paths)], old, strict=True):
        stage = item.model.card.stage(item.model.stage)
        check_against_graph(config, item.model, tiles_per_frame(stage))
        if old_path in previous:
            _check_compatible(previous[old_path], config, item.model.name)
    written = []
    for item, text in zip(exports, texts, strict=True):
        written.append(_write_model(out, item, text))
    return schema, written


def _check_compatible(old: dict, new: dict, name: str) -> None:
    for kind in ("input", "output"):
        if config_tensors(old, kind) != config_tensors(new, kind):
            raise AdedgeError(
                f"model '{name}' already exists with other {kind}s (names, types or dims); "
                "its versions would no longer fit one config",
                "export it under another --name or into a new repository",
            )


def _write_model(out: Path, item: StageExport, text: str) -> Written:
    """Version N+1 under a temporary name, renamed into place once complete; then the config."""
    folder = out / item.model.name
    folder.mkdir(parents=True, exist_ok=True)
    version = (existing_versions(folder) or [0])[-1] + 1
    building = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=folder))
    try:
        shutil.copyfile(item.onnx, building / ONNX_FILE)
        if item.plan is not None:
            shutil.copyfile(item.plan, building / PLAN_FILE)
        if sha256_file(building / ONNX_FILE) != sha256_file(item.onnx):
            raise AdedgeError(f"copying {item.onnx} changed it", "check the disk")
        building.chmod(0o755)
        os.mkdir(folder / str(version))  # fails if another export took N+1 meanwhile
        os.replace(building, folder / str(version))
    finally:
        shutil.rmtree(building, ignore_errors=True)
    write_text(folder / CONFIG_NAME, text)
    return Written(item.model.name, version, folder / str(version), item.model.platform)


def written_lines(schema: str, written: Sequence[Written]) -> list[str]:
    """What was written, one line per model version, then which schema checked it."""
    lines = [f"{w.model}: version {w.version} ({w.platform}) in {w.folder}" for w in written]
    return [*lines, f"configs checked against Triton's schema ({schema}) and the graphs"]


def check_repository_target(repo: Path, python: str | None = None) -> None:
    """``export --format triton`` before any work: a repository folder this process can
    create or write into, and Triton's schema checker runnable (a one-line probe config
    parsed by it), so a long export does not end in an error it could have given at once."""
    repo = Path(repo).expanduser()
    if repo.exists() or repo.is_symlink():
        if not repo.is_dir():
            raise AdedgeError(
                f"--triton-repo '{repo}' is a file, not a model repository folder",
                "choose another --triton-repo",
            )
        if not os.access(repo, os.W_OK | os.X_OK):
            raise AdedgeError(
                f"--triton-repo '{repo}': cannot write in it (read-only or not yours)",
                "choose a writable --triton-repo",
            )
    else:
        check_creatable(repo, "--triton-repo")
    with tempfile.TemporaryDirectory(prefix="adedge-triton-") as scratch:
        probe = Path(scratch) / CONFIG_NAME
        probe.write_text(SCHEMA_PROBE, encoding="utf-8")
        try:
            parse_configs([probe], python)
        except AdedgeError as exc:
            raise AdedgeError(
                "--format triton checks every config with Triton's schema, which cannot run "
                f"here: {exc.message}",
                f"pip install 'adedge[triton-client]', or point --triton-python (or "
                f"{TRITON_PYTHON_ENV}) at a python that has tritonclient",
            ) from None


def add_exported_bundle(
    bundle: Path,
    repo: Path,
    target: str | None = None,
    python: str | None = None,
    log: Callable[[str], None] = print,
) -> list[Written]:
    """``export --format triton``: the bundle just written becomes a new version of one
    model per stage (``<bundle folder>_<stage>``); ``target`` (``--format engine``: this
    GPU's sm) ships the engines just built as model.plan. A failure here keeps the bundle."""
    shipped = f", with its {target} TensorRT engines" if target else ""
    log(f"triton: adding the bundle's stages to the model repository {repo}{shipped}")
    try:
        schema, written = write_repository([bundle], repo, RepoOptions(target=target), python)
    except AdedgeError as exc:
        raise AdedgeError(
            f"the bundle {bundle} is written, but adding it to the Triton repository {repo} "
            f"failed: {exc.message}",
            f"{exc.hint.rstrip('.') or 'fix that'}, then `adedge triton-repo {bundle} --out "
            f"{repo}` adds it",
        ) from None
    for line in written_lines(schema, written):
        log(f"triton: {line}")
    return written
