"""Export formats, graph precisions and inference backends: one table each, with the flags
valid for each, checked by one function that the CLI and the export library both call,
and the CLI's help text written from the same tables (as Ultralytics' ``export_formats()``).

The enums mix in ``str`` rather than using ``enum.StrEnum``, which Python 3.10 (JetPack 6)
lacks: a member equals its spelling, hashes like it and is written to JSON as it, so cards,
file names and messages stay plain strings. Nothing heavy is imported here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from adedge.choice import Choice
from adedge.errors import AdedgeError, ExportError
from adedge.triton_address import TRITON_FORM, TritonAddress, is_triton, parse_triton_address


class Format(Choice):
    """What ``adedge export --format`` writes (ONNX always). ``--out`` is the bundle folder
    for every format: engines go inside it, and a Triton repository is built from it (the
    bundle stays the source of truth, for local fallback and parity)."""

    ONNX = "onnx"
    ENGINE = "engine"
    TRITON = "triton"


class Precision(Choice):
    """The precision of a stage's graph (``<stage>.onnx``, ``.fp16.onnx``, ``.int8.onnx``)
    or of a TensorRT engine."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class BackendKind(Choice):
    """What runs a stage's graph: ``--backend NAME[:PRECISION]``, or a Triton server's model
    (``--backend triton://HOST:PORT/MODEL``, see :class:`TritonAddress`)."""

    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"
    TRITON = "triton"


class ExportFlag(Choice):
    """The ``adedge export`` options whose meaning depends on the formats written."""

    PRECISIONS = "--precisions"
    INT8 = "--int8"
    HALF = "--half"
    MAX_BATCH = "--max-batch"
    WORKSPACE = "--workspace"
    TRITON_REPO = "--triton-repo"
    TRITON_PYTHON = "--triton-python"


# --- the tables ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FormatSpec:
    """One export format: what it writes (the help) and the flags it takes. The engine
    settings (--half, --max-batch, --workspace) belong to ONNX too: the card records them,
    and a device that builds its engine on first use follows them. Where the Triton
    repository goes, and the python that checks its configs, belong to ``triton`` alone."""

    format: Format
    help: str
    flags: frozenset[ExportFlag]


TRITON_FLAGS = frozenset({ExportFlag.TRITON_REPO, ExportFlag.TRITON_PYTHON})
FORMATS: dict[Format, FormatSpec] = {
    spec.format: spec
    for spec in (
        FormatSpec(
            Format.ONNX,
            "the ONNX graphs of --precisions, opset 17, dynamic batch",
            frozenset(ExportFlag) - TRITON_FLAGS,
        ),
        FormatSpec(
            Format.ENGINE,
            "also build TensorRT engines for this machine's GPU into <bundle>/engines",
            frozenset({ExportFlag.HALF, ExportFlag.MAX_BATCH, ExportFlag.WORKSPACE}),
        ),
        FormatSpec(
            Format.TRITON,
            "also add the bundle's stages to a Triton model repository (--triton-repo) as "
            "a new version, as `adedge triton-repo` does; with engine, this GPU's engines "
            "go in as model.plan",
            TRITON_FLAGS,
        ),
    )
}


@dataclass(frozen=True)
class PrecisionSpec:
    """One graph precision a stage can carry, and what ``--precisions`` says of it."""

    precision: Precision
    help: str


GRAPHS: dict[Precision, PrecisionSpec] = {
    spec.precision: spec
    for spec in (
        PrecisionSpec(Precision.FP32, "always written"),
        PrecisionSpec(
            Precision.FP16,
            "the mixed-precision twin <stage>.fp16.onnx that TensorRT FP16 engines and "
            "--backend onnxruntime:fp16 use; refused if its scores move against FP32",
        ),
        PrecisionSpec(Precision.INT8, "see --int8"),
    )
}
DEFAULT_GRAPHS = (Precision.FP32, Precision.FP16)  # --precisions' default
ALWAYS_WRITTEN = Precision.FP32  # every stage carries its FP32 graph


@dataclass(frozen=True)
class BackendSpec:
    """One backend: the precisions it runs (in the order messages list them), the one its
    bare name means (None: the card says, for TensorRT engines), and the help text of the
    bare name and of each other precision."""

    kind: BackendKind
    precisions: tuple[Precision, ...]
    default: Precision | None
    help: str
    precision_help: dict[Precision, str]


BACKENDS: dict[BackendKind, BackendSpec] = {
    spec.kind: spec
    for spec in (
        BackendSpec(
            BackendKind.ONNXRUNTIME,
            (Precision.FP32, Precision.FP16, Precision.INT8),
            Precision.FP32,
            "CPU, FP32 graph",
            {Precision.FP16: "the FP16 graph", Precision.INT8: "the graph of `export --int8`"},
        ),
        BackendSpec(
            BackendKind.TENSORRT,
            (Precision.FP16, Precision.FP32),
            None,
            "NVIDIA GPU; engine precision from the card, built on first use",
            {},
        ),
    )
}
ENGINE_PRECISIONS = BACKENDS[BackendKind.TENSORRT].precisions  # what an engine can be built in
MIN_WORKSPACE_MIB = 16


# --- backends --------------------------------------------------------------------------------


class BackendChoice(NamedTuple):
    """A parsed ``--backend``: the backend and the precision asked for (None: its default);
    for ``triton``, the server's model (``remote``) and no precision (the server's)."""

    kind: BackendKind
    precision: Precision | None
    remote: TritonAddress | None = None

    def __str__(self) -> str:
        if self.remote is not None:
            return str(self.remote)
        return str(self.kind) if self.precision is None else f"{self.kind}:{self.precision}"


def parse_backend(spec: str) -> BackendChoice:
    """``NAME[:PRECISION]`` (any case) or a Triton address -> BackendChoice; a one-line
    AdedgeError otherwise."""
    if is_triton(spec):
        if spec.strip().lower() == BackendKind.TRITON:
            raise AdedgeError(
                "--backend triton needs the server and the model", f"write --backend {TRITON_FORM}"
            )
        return BackendChoice(BackendKind.TRITON, None, parse_triton_address(spec))
    name, _, precision = spec.strip().lower().partition(":")
    if name not in [str(kind) for kind in BACKENDS]:
        local = ", ".join(str(kind) for kind in BACKENDS)
        raise AdedgeError(f"unknown backend '{spec}'", f"choose one of: {local}, {TRITON_FORM}")
    backend = BACKENDS[BackendKind(name)]
    if not precision:
        return BackendChoice(backend.kind, None)
    if precision not in backend.precisions:
        raise AdedgeError(
            f"backend '{name}' has no precision '{precision}'",
            f"choose one of: {', '.join(f'{name}:{p}' for p in backend.precisions)}",
        )
    return BackendChoice(backend.kind, Precision(precision))


def backend_help() -> str:
    """``--backend``'s help: each backend, then its other precisions."""
    parts = []
    for backend in BACKENDS.values():
        parts.append(f"{backend.kind} ({backend.help})")
        for precision in backend.precisions:
            if precision is not backend.default:
                note = backend.precision_help.get(precision)
                parts.append(f"{backend.kind}:{precision}" + (f" ({note})" if note else ""))
    parts.append(
        f"{TRITON_FORM} (a model of `adedge triton-repo` on a Triton server; the card comes "
        "from the server, the stages run there)"
    )
    return ", ".join(parts) + "."


# --- export ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportTargets:
    """What an export writes, checked: the formats (ONNX first, always), the graphs of every
    stage (FP32 first, always) and how its TensorRT engines are built."""

    formats: tuple[Format, ...]
    graphs: tuple[Precision, ...]
    half: bool = False
    max_batch: int | None = None  # None: the card's default for whole-frame stages
    workspace_mib: int | None = None  # None: the card's default

    @property
    def engine_precision(self) -> Precision:
        """The precision of the stages' engines, recorded in the card (--half: FP16)."""
        return Precision.FP16 if self.half else Precision.FP32


def spelled_items(value: str | Iterable[str]) -> list[str]:
    """A comma-separated option (or its items) as lower-case items, stripped, in order,
    each once; empty items are kept (as '') for the caller to name."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return list(dict.fromkeys(str(item).strip().lower() for item in items))


def parse_formats(value: str | Iterable[str]) -> tuple[Format, ...]:
    """``--format`` (``onnx,engine``) -> the formats in table order. ONNX is always written
    (every bundle holds its graphs), so ``engine`` alone means ``onnx,engine``."""
    names = [name for name in spelled_items(value) if name]
    unknown = [name for name in names if name not in Format.spellings()]
    if unknown or not names:
        raise ExportError(
            f"format(s) {', '.join(unknown) or '(none)'} not supported",
            f"choose from: {', '.join(Format.spellings())}, e.g. --format onnx,engine",
        )
    wanted = {Format.ONNX, *map(Format, names)}
    return tuple(f for f in Format if f in wanted)


def parse_graphs(value: str | Iterable[str], *, int8: bool = False) -> tuple[Precision, ...]:
    """``--precisions`` (``fp32,fp16``), plus int8 with ``--int8`` -> the graphs written, in
    table order, FP32 always among them."""
    names = spelled_items(value)
    unknown = [name or "(empty)" for name in names if name not in Precision.spellings()]
    if unknown or not names:
        raise ExportError(
            f"unknown precision(s) in --precisions: {', '.join(unknown) or '(none given)'}",
            f"choose from: {', '.join(Precision.spellings())} "
            f"({ALWAYS_WRITTEN} is always written), e.g. --precisions fp32,int8",
        )
    wanted = {ALWAYS_WRITTEN, *map(Precision, names), *([Precision.INT8] if int8 else [])}
    return tuple(p for p in Precision if p in wanted)


def check_flags(formats: Collection[Format], flags: Iterable[ExportFlag]) -> None:
    """Each flag given must be taken by one of the formats written (see ``FORMATS``)."""
    for flag in flags:
        if not any(flag in FORMATS[f].flags for f in formats):
            takers = [str(f) for f in Format if flag in FORMATS[f].flags]
            raise ExportError(
                f"{flag} does nothing for --format {','.join(map(str, formats))}",
                f"add {' or '.join(takers)} to --format, or drop {flag}",
            )


def check_export(
    formats: str | Iterable[str] = (Format.ONNX,),
    precisions: str | Iterable[str] = DEFAULT_GRAPHS,
    *,
    half: bool = False,
    int8: bool = False,
    max_batch: int | None = None,
    workspace_mib: int | None = None,
    triton_repo: object | None = None,
    triton_python: str | None = None,
) -> ExportTargets:
    """Every export option that can be checked before any work, as the CLI and
    ``export_bundle`` both check them: a one-line ExportError naming the option. (Whether
    the Triton repository can be written is the export's check: it touches the disk.)"""
    targets = ExportTargets(
        parse_formats(formats),
        parse_graphs(precisions, int8=int8),
        half,
        max_batch,
        workspace_mib,
    )
    given = {
        ExportFlag.PRECISIONS: _spelled(precisions) != _spelled(DEFAULT_GRAPHS),
        ExportFlag.INT8: int8,
        ExportFlag.HALF: half,
        ExportFlag.MAX_BATCH: max_batch is not None,
        ExportFlag.WORKSPACE: workspace_mib is not None,
        ExportFlag.TRITON_REPO: triton_repo is not None,
        ExportFlag.TRITON_PYTHON: triton_python is not None,
    }
    check_flags(targets.formats, (flag for flag, yes in given.items() if yes))
    if half and Precision.FP16 not in targets.graphs:
        raise ExportError(
            "--half builds the TensorRT engine from the FP16 graph, which --precisions leaves out",
            "add fp16 to --precisions (e.g. --precisions fp32,fp16), or drop --half",
        )
    check_engine_settings(max_batch=max_batch, workspace_mib=workspace_mib)
    return targets


def check_engine_settings(
    precision: str | None = None, max_batch: int | None = None, workspace_mib: int | None = None
) -> Precision | None:
    """How a TensorRT engine is to be built (``--precision``, ``--max-batch``,
    ``--workspace``; None: the card's), checked wherever engines are asked for."""
    if precision is not None and precision not in ENGINE_PRECISIONS:
        raise ExportError(
            f"--precision {precision} is not an engine precision",
            f"choose one of: {', '.join(ENGINE_PRECISIONS)}",
        )
    if max_batch is not None and max_batch < 1:
        raise ExportError("--max-batch must be at least 1", "e.g. --max-batch 8")
    if workspace_mib is not None and workspace_mib < MIN_WORKSPACE_MIB:
        raise ExportError(
            f"--workspace is in MiB and must be at least {MIN_WORKSPACE_MIB}", "e.g. 1024"
        )
    return None if precision is None else Precision(precision)


def _spelled(value: str | Iterable[str]) -> list[str]:
    return sorted(spelled_items(value))


# --- help text -------------------------------------------------------------------------------


def format_help() -> str:
    """``--format``'s help, from ``FORMATS``."""
    described = [f"'{spec.format}' ({spec.help})" for spec in FORMATS.values()]
    listed = ", ".join(described[:-1]) + " and " + described[-1]
    return f"Formats, comma-separated: {listed}. --out is the bundle folder whatever the format."


def precisions_help() -> str:
    """``--precisions``' help, from ``GRAPHS``."""
    described = ", ".join(f"{spec.precision} ({spec.help})" for spec in GRAPHS.values())
    return (
        f"Graphs to write, comma-separated: {described}. Leave fp16 out to skip it, "
        "e.g. --precisions fp32,int8."
    )
