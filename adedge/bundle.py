"""The model bundle: the contract between export and the runtime (DESIGN §4).

A bundle is a folder with ``adedge.json`` (the card) and the ONNX graphs it names. The card
holds everything the runtime needs and nothing it must guess: per stage the file, its
sha256, the input tensor (size, colour, mean/std), outputs, tiling and reduction; how the
stages combine; score normalisation; the threshold and how it was chosen; what the model
was trained on; and the metrics measured at export.

Reading a card is strict (DESIGN §7): every field the runtime uses is type-, finiteness- and
range-checked, and any problem is one :class:`BundleError` line naming the field (e.g.
``stages.global.weight``) and the fix. Every file a card names must lie inside the bundle
folder (no absolute path, no ``..``, no link leading out), checked before the file is looked
at, so a card can neither load nor probe files elsewhere; every graph carries its sha256 and
is checked against it. Older card versions are upgraded by :func:`migrate` before reading.
The JSON literals ``NaN``/``Infinity`` parse (export may write NaN into ``metrics``, e.g. an
INT8 parity rho); ``training`` and ``metrics`` are carried as written and never read by the
runtime, and every number the runtime does read must be finite.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from adedge.errors import AdedgeError, BundleError
from adedge.preprocess import COLOURS, RESIZE_POLICY, InputSpec

CARD_NAME = "adedge.json"
# The card format this adedge writes and reads. Cards of an older version are upgraded by
# migrate() (one step per version in MIGRATIONS); a newer one is refused. Fields added
# within version 1 (fp16_file/int8_file and their sha256, engine) are optional: a card
# without them reads as "not exported", so they need no migration step.
FORMAT_VERSION = 1
REDUCTIONS = ("max", "mean")
COMBINES = ("sum", "mean")
PADDINGS = ("reflect", "constant", "replicate")
TILE_ORDERS = ("row-major",)  # the only order the runtime's tiling plans cut
PRECISIONS = ("fp32", "fp16", "int8")  # graphs a stage may carry (fp32 always)
ENGINE_PRECISIONS = ("fp16", "fp32")
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
MAX_CARD_BYTES = 16 << 20  # cards are a few KiB; a bigger file is refused before parsing
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# A stage name becomes part of file names (engines/<stage>.<sm>...engine): a plain word.
STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# from-version -> the function that upgrades a card dict of that version by one version
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
REEXPORT = "re-export the bundle with `adedge export` or fix the card by hand"


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
    """How a TensorRT engine of the stage is built on the device (DESIGN §5).

    ``max_batch``: the optimisation profile's largest batch (a tiled stage: its tiles per
    frame); ``opt_batch``: the batch TensorRT tunes its kernels for; ``workspace_mib``: the
    builder's workspace limit. Engines themselves are built on, and bound to, each GPU.
    """

    precision: str = "fp16"
    max_batch: int = DEFAULT_ENGINE_MAX_BATCH
    opt_batch: int = 1
    workspace_mib: int = DEFAULT_WORKSPACE_MIB


@dataclass(frozen=True)
class StageSpec:
    """One ONNX graph and how its outputs feed the frame score.

    ``fp16_file``/``int8_file``: the mixed-precision FP16 twin of ``file`` (written by
    export unless ``--precisions`` leaves it out; None in older cards) and the optional INT8
    (QDQ) graph for ONNX Runtime on CPUs, each with its sha256. ``engine``: how TensorRT
    engines are built (None: the defaults, with the tiles per frame as max batch for a tiled
    stage).
    """

    name: str
    file: str
    sha256: str
    input_name: str
    input: InputSpec
    outputs: tuple[str, ...] = ("score",)
    normalisation_in_graph: bool = False
    tiling: TilingSpec | None = None
    reduce: str = "max"
    weight: float = 1.0
    fp16_file: str | None = None
    fp16_sha256: str | None = None
    int8_file: str | None = None
    int8_sha256: str | None = None
    engine: EngineSpec | None = None

    def graph(self, precision: str = "fp32") -> tuple[str | None, str | None]:
        """(file, sha256) of the stage's graph in ``precision`` (None, None: not exported)."""
        if precision == "fp32":
            return self.file, self.sha256
        if precision == "fp16":
            return self.fp16_file, self.fp16_sha256
        if precision == "int8":
            return self.int8_file, self.int8_sha256
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")


@dataclass(frozen=True)
class ThresholdSpec:
    value: float
    method: str
    detail: str = ""


@dataclass(frozen=True)
class Card:
    method: str
    stages: tuple[StageSpec, ...]
    threshold: ThresholdSpec
    combine: str = "sum"
    score_normalisation: dict[str, float] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    adedge_version: str = ""
    format_version: int = FORMAT_VERSION

    def method_warning(self) -> str | None:
        """One line for a card whose method this adedge does not know (None: it knows it).

        Such a bundle still streams: the card carries everything the runtime needs (graphs,
        preprocessing, tiling, threshold); only method-specific extras (e.g. the paper's
        per-image time in `adedge bench`) are missing.
        """
        from adedge.registry import METHODS

        if self.method.strip().lower().replace("-", "") in METHODS:
            return None
        return (
            f"the bundle's method '{self.method}' is not one this adedge knows "
            f"({', '.join(sorted(METHODS))}); scoring with the card's graphs, "
            "preprocessing and threshold as written"
        )

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
            entry["input"] = stage.input.to_dict()
            entry["outputs"] = list(stage.outputs)
            entry["tiling"] = None if stage.tiling is None else asdict(stage.tiling)
            if stage.tiling is not None:
                entry["tiling"]["resize_to"] = list(stage.tiling.resize_to)
            for key in ("fp16_file", "fp16_sha256", "int8_file", "int8_sha256", "engine"):
                if entry[key] is None:  # older readers and cards: absent, not null
                    entry.pop(key)
            stages[stage.name] = entry
        return {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "created": self.created,
            "adedge_version": self.adedge_version,
            "stages": stages,
            "combine": self.combine,
            "score_normalisation": self.score_normalisation,
            "threshold": asdict(self.threshold),
            "training": self.training,
            "metrics": self.metrics,
        }


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_MISSING = object()
_EXPECTED = {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "a bool"}
OUTSIDE = "names a file outside the bundle folder"
OUTSIDE_HINT = (
    "a card names its files by relative paths inside its folder (no '..', no absolute path, "
    "no link leading out): re-export the bundle or fix the card by hand"
)
_GRAPH_FIELDS = {
    p: ("file", "sha256") if p == "fp32" else (f"{p}_file", f"{p}_sha256") for p in PRECISIONS
}


def _show(value: Any) -> str:
    """A card value for a message: short and on one line."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's str-conversion digit limit
        return "a number too large to show"
    return text if len(text) <= 40 else text[:37] + "..."


def _finite(value: Any) -> float | None:
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
    number = _finite(value)
    if number is None:
        raise AdedgeError(
            f"{where} must be a finite number (got {_show(value)})",
            "pass a number such as 0.5, or leave it out to use the card's threshold",
        )
    return number


def tile_count(tiling: TilingSpec) -> int:
    """Tiles per frame of a tiled stage, as the runtime's ``plan_tiles(...).count`` (which
    depends only on the spec): per axis one tile when ``L <= tile``, else
    ``ceil((L - tile) / stride) + 1`` (runtime/tiling.py ``_axis``), without building a plan."""

    def axis(length: int) -> int:
        if length <= tiling.tile:
            return 1
        return -(-(length - tiling.tile) // tiling.stride) + 1

    return axis(int(tiling.resize_to[0])) * axis(int(tiling.resize_to[1]))


def _field_error(where: Path | str, field_name: str, problem: str, hint: str = "") -> BundleError:
    return BundleError(f"{where}: field '{field_name}' {problem}", hint or REEXPORT)


def _file_problem(name: str) -> str | None:
    """What is wrong with a card's file name from its text alone (None: nothing)."""
    if not name:
        return "is empty"
    if "\x00" in name:
        return "holds a NUL character"
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.anchor or ".." in posix.parts or ".." in windows.parts:
        return OUTSIDE
    return None


def bundle_file(folder: str | Path, name: str, field_name: str) -> Path:
    """``folder/name`` once it is known to lie inside the folder, links followed.

    Checked before anything looks at the file: an absolute name or one with ``..`` is
    refused from its text alone, a link from where it leads (existing or not), so a card
    naming ``/etc/passwd`` or ``../../x`` gets the same refusal whether or not that file
    exists. ``field_name`` (e.g. ``stages.global.file``) is named in the error.
    """
    where = Path(folder) / CARD_NAME
    problem = _file_problem(name)
    if problem is None:
        root = os.path.realpath(folder)
        target = os.path.realpath(os.path.join(root, name))
        if target == root or os.path.commonpath([root, target]) != root:
            problem = OUTSIDE
    if problem is not None:
        raise _field_error(where, field_name, problem, OUTSIDE_HINT if problem == OUTSIDE else "")
    return Path(folder) / name


class _CardReader:
    """Reads a card dict, raising a BundleError that names the offending field.

    Every field the runtime uses is checked for type, finiteness and range; ``training`` and
    ``metrics`` must be objects and are carried as written; unknown keys are ignored.
    """

    def __init__(self, where: Path) -> None:
        self.where = where

    def fail(self, field_name: str, problem: str, hint: str = "") -> BundleError:
        return _field_error(self.where, field_name, problem, hint)

    def get(
        self,
        data: dict,
        key: str,
        kind: type | tuple[type, ...],
        path: str,
        default: Any = _MISSING,
    ) -> Any:
        """``data[key]`` of type ``kind`` (never a bool unless ``kind`` is bool); a ``default``
        stands in for an absent or null value."""
        if key not in data or (data[key] is None and default is not _MISSING):
            if default is _MISSING:
                raise self.fail(path, "is missing")
            return default
        value = data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            expected = _EXPECTED.get(kind, "a number")  # type: ignore[call-overload]
            raise self.fail(
                path, f"has the wrong type ({type(value).__name__}): it must be {expected}"
            )
        return value

    def text(
        self, data: dict, key: str, path: str, default: Any = _MISSING, empty: bool = False
    ) -> str:
        value = self.get(data, key, str, path, default)
        if not value and not empty:
            raise self.fail(path, "is empty")
        return value

    def word(
        self, data: dict, key: str, choices: tuple[str, ...], path: str, default: Any = _MISSING
    ) -> str:
        value = self.get(data, key, str, path, default)
        if value not in choices:
            raise self.fail(path, f"must be one of {', '.join(choices)} (got {_show(value)})")
        return value

    def number(self, data: dict, key: str, path: str, default: Any = _MISSING) -> float:
        value = self.get(data, key, (int, float), path, default)
        number = _finite(value)
        if number is None:
            raise self.fail(path, f"must be a finite number (got {_show(value)})")
        return number

    def count(self, data: dict, key: str, path: str, limit: int, default: Any = _MISSING) -> int:
        value = self.get(data, key, int, path, default)
        if not 0 < value <= limit:
            raise self.fail(path, f"must be an integer from 1 to {limit} (got {_show(value)})")
        return value

    def numbers(
        self, data: dict, key: str, path: str, count: int, low: float, high: float
    ) -> tuple[float, ...]:
        values = self.get(data, key, list, path)
        if len(values) != count:
            raise self.fail(path, f"must hold {count} number(s), one per channel")
        numbers = []
        for value in values:
            number = _finite(value)
            if number is None or not low <= number <= high:
                raise self.fail(
                    path, f"must hold numbers from {low:g} to {high:g} (got {_show(value)})"
                )
            numbers.append(number)
        return tuple(numbers)

    def file_name(self, data: dict, key: str, path: str) -> str:
        name = self.get(data, key, str, path)
        problem = _file_problem(name)
        if problem is not None:
            raise self.fail(path, problem, OUTSIDE_HINT if problem == OUTSIDE else "")
        return name

    def sha256(self, data: dict, key: str, path: str) -> str:
        value = data.get(key)
        if value is None:
            raise self.fail(path, "is missing: every graph the card names needs its sha256")
        if not isinstance(value, str) or not SHA256_HEX.fullmatch(value):
            raise self.fail(
                path, f"must be the file's sha256, 64 lowercase hex digits (got {_show(value)})"
            )
        return value

    def graph(self, data: dict, precision: str, path: str) -> tuple[str | None, str | None]:
        """(file, sha256) of an optional FP16/INT8 graph: both or neither."""
        file_key, sha_key = _GRAPH_FIELDS[precision]
        if data.get(file_key) is None:
            if data.get(sha_key) is not None:
                raise self.fail(f"{path}.{sha_key}", f"is set but {file_key} is not")
            return None, None
        name = self.file_name(data, file_key, f"{path}.{file_key}")
        return name, self.sha256(data, sha_key, f"{path}.{sha_key}")

    def input_spec(self, data: dict, path: str) -> InputSpec:
        colour = self.word(data, "colour", COLOURS, f"{path}.colour")
        channels = 1 if colour == "gray" else 3
        declared = self.get(data, "channels", int, f"{path}.channels", default=channels)
        if declared != channels:
            raise self.fail(
                f"{path}.channels", f"is {declared} but colour '{colour}' has {channels}"
            )
        limit = MAX_NORMALISATION
        mean = self.numbers(data, "mean", f"{path}.mean", channels, -limit, limit)
        std = self.numbers(data, "std", f"{path}.std", channels, MIN_STD, limit)
        return InputSpec(
            height=self.count(data, "height", f"{path}.height", MAX_SIDE),
            width=self.count(data, "width", f"{path}.width", MAX_SIDE),
            colour=colour,
            mean=mean,
            std=std,
            resize=self.word(
                data, "resize", (RESIZE_POLICY,), f"{path}.resize", default=RESIZE_POLICY
            ),
        )

    def tiling(self, data: dict | None, path: str) -> TilingSpec | None:
        if data is None:
            return None
        resize_to = self.get(data, "resize_to", list, f"{path}.resize_to")
        sides_ok = all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in resize_to
        )
        if len(resize_to) != 2 or not sides_ok:
            raise self.fail(
                f"{path}.resize_to",
                f"must be [height, width], each from 1 to {MAX_SIDE} (got {_show(resize_to)})",
            )
        tile = self.count(data, "tile", f"{path}.tile", MAX_SIDE)
        if tile > min(resize_to):
            raise self.fail(
                f"{path}.tile", f"must fit in resize_to ({tile} > {min(resize_to)} pixels)"
            )
        stride = self.count(data, "stride", f"{path}.stride", MAX_SIDE)
        if stride > tile:
            raise self.fail(f"{path}.stride", f"must not exceed the tile ({stride} > {tile})")
        spec = TilingSpec(
            (resize_to[0], resize_to[1]),
            tile,
            stride,
            self.word(data, "padding", PADDINGS, f"{path}.padding"),
            self.word(data, "order", TILE_ORDERS, f"{path}.order", default=TilingSpec.order),
        )
        tiles = tile_count(spec)
        if tiles > MAX_TILES_PER_FRAME:
            raise self.fail(
                path,
                f"makes {tiles} tiles per frame, more than {MAX_TILES_PER_FRAME}",
                "use a larger tile or stride, or a smaller resize_to, and re-export",
            )
        return spec

    def engine(self, data: dict | None, path: str) -> EngineSpec | None:
        if data is None:
            return None
        precision = self.word(
            data, "precision", ENGINE_PRECISIONS, f"{path}.precision", default=EngineSpec.precision
        )
        sizes = {
            "max_batch": (MAX_ENGINE_BATCH, DEFAULT_ENGINE_MAX_BATCH),
            "opt_batch": (MAX_ENGINE_BATCH, EngineSpec.opt_batch),
            "workspace_mib": (MAX_WORKSPACE_MIB, DEFAULT_WORKSPACE_MIB),
        }
        values = {
            key: self.count(data, key, f"{path}.{key}", limit, default=default)
            for key, (limit, default) in sizes.items()
        }
        if values["opt_batch"] > values["max_batch"]:
            raise self.fail(f"{path}.opt_batch", "must not exceed max_batch")
        return EngineSpec(precision=precision, **values)

    def stage(self, name: str, data: dict) -> StageSpec:
        path = f"stages.{name}"
        outputs = self.get(data, "outputs", list, f"{path}.outputs")
        for output in outputs:
            if not isinstance(output, str) or not output:
                raise self.fail(f"{path}.outputs", f"must hold output names (got {_show(output)})")
        if len(set(outputs)) != len(outputs):
            raise self.fail(f"{path}.outputs", "names an output twice")
        if "score" not in outputs:
            raise self.fail(f"{path}.outputs", "must include 'score'")
        if self.get(data, "normalisation_in_graph", bool, f"{path}.normalisation_in_graph", False):
            raise self.fail(
                f"{path}.normalisation_in_graph",
                "is true, but this adedge always normalises with the card's mean/std before "
                "the graph (it would normalise twice)",
                "re-export the bundle with this adedge",
            )
        weight = self.number(data, "weight", f"{path}.weight", default=1.0)
        if weight < 0:
            raise self.fail(f"{path}.weight", f"must not be negative (got {weight:g})")
        fp16_file, fp16_sha256 = self.graph(data, "fp16", path)
        int8_file, int8_sha256 = self.graph(data, "int8", path)
        return StageSpec(
            name=name,
            file=self.file_name(data, "file", f"{path}.file"),
            sha256=self.sha256(data, "sha256", f"{path}.sha256"),
            input_name=self.text(data, "input_name", f"{path}.input_name"),
            input=self.input_spec(self.get(data, "input", dict, f"{path}.input"), f"{path}.input"),
            outputs=tuple(outputs),
            normalisation_in_graph=False,
            tiling=self.tiling(
                self.get(data, "tiling", dict, f"{path}.tiling", default=None), f"{path}.tiling"
            ),
            reduce=self.word(data, "reduce", REDUCTIONS, f"{path}.reduce", default="max"),
            weight=weight,
            fp16_file=fp16_file,
            fp16_sha256=fp16_sha256,
            int8_file=int8_file,
            int8_sha256=int8_sha256,
            engine=self.engine(
                self.get(data, "engine", dict, f"{path}.engine", default=None), f"{path}.engine"
            ),
        )

    def normalisation(self, data: dict | None) -> dict[str, float] | None:
        """min-max constants; max <= min is refused (the runtime cannot divide by the span)."""
        if data is None:
            return None
        low = self.number(data, "min", "score_normalisation.min")
        high = self.number(data, "max", "score_normalisation.max")
        if high <= low:
            raise self.fail(
                "score_normalisation.max", f"must be greater than min ({high:g} <= {low:g})"
            )
        return {"min": low, "max": high}

    def card(self, data: Any) -> Card:
        data = migrate(data, self.where)
        stages = self.get(data, "stages", dict, "stages")
        if not stages:
            raise self.fail("stages", "must name at least one stage")
        for name in stages:
            if not isinstance(name, str) or not STAGE_NAME.fullmatch(name):
                raise self.fail(
                    "stages",
                    f"has a stage named {_show(name)}: a stage name is 1 to 64 letters, digits, "
                    "'_' or '-', starting with a letter or digit",
                )
        threshold = self.get(data, "threshold", dict, "threshold")
        return Card(
            method=self.text(data, "method", "method"),
            stages=tuple(
                self.stage(name, self.get(stages, name, dict, f"stages.{name}")) for name in stages
            ),
            threshold=ThresholdSpec(
                value=self.number(threshold, "value", "threshold.value"),
                method=self.text(threshold, "method", "threshold.method"),
                detail=self.text(threshold, "detail", "threshold.detail", "", empty=True),
            ),
            combine=self.word(data, "combine", COMBINES, "combine", default="sum"),
            score_normalisation=self.normalisation(
                self.get(data, "score_normalisation", dict, "score_normalisation", default=None)
            ),
            training=dict(self.get(data, "training", dict, "training", default={})),
            metrics=dict(self.get(data, "metrics", dict, "metrics", default={})),
            created=self.text(data, "created", "created", default="", empty=True),
            adedge_version=self.text(
                data, "adedge_version", "adedge_version", default="", empty=True
            ),
            format_version=FORMAT_VERSION,
        )


def migrate(data: Any, where: Path | str = CARD_NAME) -> dict[str, Any]:
    """The card dict upgraded to :data:`FORMAT_VERSION` (a new dict; ``data`` is untouched).

    Each supported older version ``v`` has one step ``MIGRATIONS[v]`` taking a version-``v``
    dict to version ``v + 1``; the steps run in order. A version that is not an integer, is
    below 1, or is newer than this adedge is refused with a one-line BundleError.
    """
    reader = _CardReader(Path(where))
    if not isinstance(data, dict):
        raise reader.fail("(top level)", "must be a JSON object")
    version = reader.get(data, "format_version", int, "format_version")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{where}: card format {_show(version)} is newer than this adedge understands "
            f"({FORMAT_VERSION})",
            "upgrade adedge on this machine",
        )
    if version < 1:
        raise reader.fail("format_version", f"must be a card version of at least 1 (got {version})")
    data = dict(data)
    while version < FORMAT_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
        data["format_version"] = version
    return data


def parse_card(data: Any, where: Path | str = CARD_NAME) -> Card:
    """A validated Card from a card dict of any supported version (see :func:`migrate`)."""
    return _CardReader(Path(where)).card(data)


def read_card_json(card_path: Path) -> Any:
    """The JSON of a card file, read with bounds: any problem is one BundleError line."""
    hint = "re-export the bundle with `adedge export`"
    try:
        with open(card_path, "rb") as handle:
            raw = handle.read(MAX_CARD_BYTES + 1)
        if len(raw) > MAX_CARD_BYTES:
            raise BundleError(
                f"{card_path} is larger than {MAX_CARD_BYTES >> 20} MiB: not a card", hint
            )
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        problem = "nested too deeply"
    except UnicodeDecodeError:
        problem = "not UTF-8"
    except json.JSONDecodeError as exc:
        problem = str(exc)
    except ValueError:  # an integer literal beyond Python's digit limit
        problem = "a number literal is too long"
    except OSError as exc:
        raise BundleError(f"{card_path} cannot be read ({exc.strerror or exc})", hint) from None
    raise BundleError(f"{card_path} is not valid JSON ({problem})", hint)


@dataclass(frozen=True)
class Bundle:
    """A bundle folder whose card was read and whose files were found."""

    path: Path
    card: Card

    def stage_file(self, stage: StageSpec) -> Path:
        return bundle_file(self.path, stage.file, f"stages.{stage.name}.file")

    def graph_file(self, stage: StageSpec, precision: str = "fp32") -> Path:
        return precision_graph(self.path, stage, precision)


def precision_graph(folder: Path, stage: StageSpec, precision: str) -> Path:
    """The stage's graph in ``precision``: inside the bundle folder, present, and matching
    the card's sha256 (checked in that order; a graph without a sha256 is refused)."""
    if precision not in PRECISIONS:
        raise BundleError(
            f"unknown precision '{precision}'", f"choose one of: {', '.join(PRECISIONS)}"
        )
    name, digest = stage.graph(precision)
    if name is None:
        hint = (
            "re-export the bundle with `adedge export --int8`"
            if precision == "int8"
            else "re-export the bundle with `adedge export --precisions fp32,fp16` (the default)"
        )
        raise BundleError(
            f"model bundle '{folder}' has no {precision.upper()} graph for stage '{stage.name}'",
            hint,
        )
    file_key, sha_key = _GRAPH_FIELDS[precision]
    path = bundle_file(folder, name, f"stages.{stage.name}.{file_key}")
    if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest):
        raise _field_error(
            Path(folder) / CARD_NAME,
            f"stages.{stage.name}.{sha_key}",
            "is not a sha256 (64 lowercase hex digits): every graph is checked against its own",
        )
    if not path.is_file():
        raise BundleError(
            f"model bundle '{folder}' is missing {name} (stage '{stage.name}', {precision})",
            "copy the whole bundle folder or re-export it",
        )
    if sha256_file(path) != digest:
        raise BundleError(
            f"{path} does not match the sha256 in {CARD_NAME}",
            "the file was changed or truncated: copy the bundle again or re-export it",
        )
    return path


def load_bundle(path: str | Path) -> Bundle:
    """Read and validate a bundle; every problem is a BundleError naming the file or field.

    Every file the card names must lie inside the folder (checked before any is looked at);
    each stage's FP32 graph must exist and match its sha256. The FP16/INT8 graphs are
    hashed when a backend asks for them (:func:`precision_graph`).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(
            f"model bundle '{folder}' does not exist or is not a folder",
            "pass the folder written by `adedge export` with --model",
        )
    card_path = folder / CARD_NAME
    if not card_path.is_file():
        raise BundleError(
            f"model bundle '{folder}' has no {CARD_NAME}",
            "re-export it with `adedge export --out` to a fresh folder",
        )
    card = parse_card(read_card_json(card_path), card_path)
    for stage in card.stages:
        for precision, (file_key, _) in _GRAPH_FIELDS.items():
            name = stage.graph(precision)[0]
            if name is not None:
                bundle_file(folder, name, f"stages.{stage.name}.{file_key}")
    for stage in card.stages:
        file = folder / stage.file
        if not file.is_file():
            raise BundleError(
                f"model bundle '{folder}' is missing {stage.file} (stage '{stage.name}')",
                "copy the whole bundle folder or re-export it",
            )
        if sha256_file(file) != stage.sha256:
            raise BundleError(
                f"{file} does not match the sha256 in {CARD_NAME}",
                "the file was changed or truncated: copy the bundle again or re-export it",
            )
    return Bundle(folder, card)
