"""The model bundle: the contract between export and the runtime (DESIGN §4).

A bundle is a folder with ``adedge.json`` (the card) and the ONNX graphs it names. The card
holds everything the runtime needs and nothing it must guess: per stage the file, its
sha256, the input tensor (size, colour, mean/std), outputs, tiling and reduction; how the
stages combine; score normalisation; the threshold and how it was chosen; what the model
was trained on; and the metrics measured at export.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adedge.errors import BundleError
from adedge.preprocess import COLOURS, InputSpec

CARD_NAME = "adedge.json"
FORMAT_VERSION = 1
REDUCTIONS = ("max", "mean")
PADDINGS = ("reflect", "constant", "replicate")
PRECISIONS = ("fp32", "fp16", "int8")  # graphs a stage may carry (fp32 always)
ENGINE_PRECISIONS = ("fp16", "fp32")
DEFAULT_ENGINE_MAX_BATCH = 8
DEFAULT_WORKSPACE_MIB = 1024


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

    ``fp16_file``/``int8_file``: the mixed-precision FP16 twin of ``file`` (always written by
    export since FP16 support; None in older cards) and the optional INT8 (QDQ) graph for
    ONNX Runtime on CPUs, each with its sha256. ``engine``: how TensorRT engines are built
    (None: the defaults, with the tiles per frame as max batch for a tiled stage).
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
            "format_version": self.format_version,
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


class _CardReader:
    """Reads a card dict, raising a BundleError that names the offending field."""

    def __init__(self, where: Path) -> None:
        self.where = where

    def fail(self, field_name: str, problem: str) -> BundleError:
        return BundleError(
            f"{self.where}: field '{field_name}' {problem}",
            "re-export the bundle with `adedge export` or fix the card by hand",
        )

    def get(self, data: dict, key: str, kind: type | tuple[type, ...], path: str) -> Any:
        if not isinstance(data, dict) or key not in data:
            raise self.fail(path, "is missing")
        value = data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            raise self.fail(path, f"has the wrong type ({type(value).__name__})")
        return value

    def positive_int(self, data: dict, key: str, path: str) -> int:
        value = self.get(data, key, int, path)
        if value <= 0:
            raise self.fail(path, f"must be a positive integer (got {value})")
        return value

    def input_spec(self, data: dict, path: str) -> InputSpec:
        colour = self.get(data, "colour", str, f"{path}.colour")
        if colour not in COLOURS:
            raise self.fail(f"{path}.colour", f"must be one of {COLOURS} (got '{colour}')")
        channels = 1 if colour == "gray" else 3
        mean = self.get(data, "mean", list, f"{path}.mean")
        std = self.get(data, "std", list, f"{path}.std")
        for name, values in (("mean", mean), ("std", std)):
            if len(values) != channels or not all(isinstance(v, (int, float)) for v in values):
                raise self.fail(f"{path}.{name}", f"must hold {channels} numbers")
        if any(v <= 0 for v in std):
            raise self.fail(f"{path}.std", "must be positive")
        return InputSpec(
            height=self.positive_int(data, "height", f"{path}.height"),
            width=self.positive_int(data, "width", f"{path}.width"),
            colour=colour,
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
            resize=str(data.get("resize", InputSpec.resize)),
        )

    def tiling(self, data: Any, path: str) -> TilingSpec | None:
        if data is None:
            return None
        resize_to = self.get(data, "resize_to", list, f"{path}.resize_to")
        if len(resize_to) != 2 or not all(isinstance(v, int) and v > 0 for v in resize_to):
            raise self.fail(f"{path}.resize_to", "must be [height, width]")
        tile = self.positive_int(data, "tile", f"{path}.tile")
        stride = self.positive_int(data, "stride", f"{path}.stride")
        if stride > tile:
            raise self.fail(f"{path}.stride", f"must not exceed the tile ({stride} > {tile})")
        padding = self.get(data, "padding", str, f"{path}.padding")
        if padding not in PADDINGS:
            raise self.fail(f"{path}.padding", f"must be one of {PADDINGS}")
        return TilingSpec((resize_to[0], resize_to[1]), tile, stride, padding)

    def optional_str(self, data: dict, key: str, path: str) -> str | None:
        if data.get(key) is None:
            return None
        return self.get(data, key, str, path)

    def engine(self, data: Any, path: str) -> EngineSpec | None:
        if data is None:
            return None
        if not isinstance(data, dict):
            raise self.fail(path, "must be an object")
        precision = data.get("precision", EngineSpec.precision)
        if precision not in ENGINE_PRECISIONS:
            raise self.fail(f"{path}.precision", f"must be one of {ENGINE_PRECISIONS}")
        sizes = {}
        for key in ("max_batch", "opt_batch", "workspace_mib"):
            sizes[key] = (
                self.positive_int(data, key, f"{path}.{key}")
                if key in data
                else getattr(EngineSpec, key)
            )
        if sizes["opt_batch"] > sizes["max_batch"]:
            raise self.fail(f"{path}.opt_batch", "must not exceed max_batch")
        return EngineSpec(precision=precision, **sizes)

    def stage(self, name: str, data: dict) -> StageSpec:
        path = f"stages.{name}"
        reduce = data.get("reduce", "max")
        if reduce not in REDUCTIONS:
            raise self.fail(f"{path}.reduce", f"must be one of {REDUCTIONS}")
        outputs = self.get(data, "outputs", list, f"{path}.outputs")
        if "score" not in outputs:
            raise self.fail(f"{path}.outputs", "must include 'score'")
        return StageSpec(
            name=name,
            file=self.get(data, "file", str, f"{path}.file"),
            sha256=self.get(data, "sha256", str, f"{path}.sha256"),
            input_name=self.get(data, "input_name", str, f"{path}.input_name"),
            input=self.input_spec(self.get(data, "input", dict, f"{path}.input"), f"{path}.input"),
            outputs=tuple(outputs),
            normalisation_in_graph=bool(data.get("normalisation_in_graph", False)),
            tiling=self.tiling(data.get("tiling"), f"{path}.tiling"),
            reduce=reduce,
            weight=float(data.get("weight", 1.0)),
            fp16_file=self.optional_str(data, "fp16_file", f"{path}.fp16_file"),
            fp16_sha256=self.optional_str(data, "fp16_sha256", f"{path}.fp16_sha256"),
            int8_file=self.optional_str(data, "int8_file", f"{path}.int8_file"),
            int8_sha256=self.optional_str(data, "int8_sha256", f"{path}.int8_sha256"),
            engine=self.engine(data.get("engine"), f"{path}.engine"),
        )

    def card(self, data: Any) -> Card:
        if not isinstance(data, dict):
            raise self.fail("(top level)", "must be a JSON object")
        version = self.get(data, "format_version", int, "format_version")
        if version > FORMAT_VERSION:
            raise BundleError(
                f"{self.where}: card format {version} is newer than this adedge understands "
                f"({FORMAT_VERSION})",
                "upgrade adedge on this machine",
            )
        stages = self.get(data, "stages", dict, "stages")
        if not stages:
            raise self.fail("stages", "must name at least one stage")
        threshold = self.get(data, "threshold", dict, "threshold")
        return Card(
            method=self.get(data, "method", str, "method"),
            stages=tuple(self.stage(name, entry) for name, entry in stages.items()),
            threshold=ThresholdSpec(
                value=float(self.get(threshold, "value", (int, float), "threshold.value")),
                method=self.get(threshold, "method", str, "threshold.method"),
                detail=str(threshold.get("detail", "")),
            ),
            combine=str(data.get("combine", "sum")),
            score_normalisation=data.get("score_normalisation"),
            training=dict(data.get("training") or {}),
            metrics=dict(data.get("metrics") or {}),
            created=str(data.get("created", "")),
            adedge_version=str(data.get("adedge_version", "")),
            format_version=version,
        )


def parse_card(data: Any, where: Path | str = CARD_NAME) -> Card:
    return _CardReader(Path(where)).card(data)


@dataclass(frozen=True)
class Bundle:
    """A bundle folder whose card was read and whose files were found."""

    path: Path
    card: Card

    def stage_file(self, stage: StageSpec) -> Path:
        return self.path / stage.file

    def graph_file(self, stage: StageSpec, precision: str = "fp32") -> Path:
        return precision_graph(self.path, stage, precision)


def precision_graph(folder: Path, stage: StageSpec, precision: str) -> Path:
    """The stage's graph in ``precision``, checked to exist and match the card's sha256."""
    if precision not in PRECISIONS:
        raise BundleError(
            f"unknown precision '{precision}'", f"choose one of: {', '.join(PRECISIONS)}"
        )
    name, digest = stage.graph(precision)
    if name is None:
        hint = (
            "re-export the bundle with `adedge export --int8`"
            if precision == "int8"
            else "re-export the bundle with this adedge (export writes the FP16 graph)"
        )
        raise BundleError(
            f"model bundle '{folder}' has no {precision.upper()} graph for stage '{stage.name}'",
            hint,
        )
    path = Path(folder) / name
    if not path.is_file():
        raise BundleError(
            f"model bundle '{folder}' is missing {name} (stage '{stage.name}', {precision})",
            "copy the whole bundle folder or re-export it",
        )
    if digest and sha256_file(path) != digest:
        raise BundleError(
            f"{path} does not match the sha256 in {CARD_NAME}",
            "the file was changed or truncated: copy the bundle again or re-export it",
        )
    return path


def load_bundle(path: str | Path, verify_sha256: bool = True) -> Bundle:
    """Read and validate a bundle; every problem is a BundleError naming the file or field."""
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
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(
            f"{card_path} is not valid JSON ({exc})", "re-export the bundle with `adedge export`"
        ) from None
    card = parse_card(data, card_path)
    for stage in card.stages:
        file = folder / stage.file
        if not file.is_file():
            raise BundleError(
                f"model bundle '{folder}' is missing {stage.file} (stage '{stage.name}')",
                "copy the whole bundle folder or re-export it",
            )
        if verify_sha256 and sha256_file(file) != stage.sha256:
            raise BundleError(
                f"{file} does not match the sha256 in {CARD_NAME}",
                "the file was changed or truncated: copy the bundle again or re-export it",
            )
    return Bundle(folder, card)
