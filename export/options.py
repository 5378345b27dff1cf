"""What an export is asked to do (:class:`ExportOptions`), checked before any checkpoint is
loaded: formats, precisions, and a bundle folder this process can write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from adedge.bundle import (
    CARD_NAME,
    DEFAULT_WORKSPACE_MIB,
)
from adedge.errors import AdedgeError, ExportError
from adedge.export import int8 as int8_graph
from adedge.export.trace import OPSET
from adedge.outputs import check_creatable
from adedge.runtime.backends import engines

FORMATS = ("onnx", "engine")


PRECISIONS = ("fp32", "fp16", "int8")  # graphs a stage can carry; fp32 is always written


DEFAULT_PRECISIONS = ("fp32", "fp16")


@dataclass
class ExportOptions:
    checkpoint: Path | list[Path]  # one per stage: IGD's global and local runs make one bundle
    out: Path
    method: str | None = None
    data: str | None = None  # where held-out normal images come from; default: the training data
    threshold_quantile: float = 0.99
    opset: int = OPSET
    formats: tuple[str, ...] = ("onnx",)  # "engine": also build TensorRT engines here
    half: bool = False  # engines in FP16 (the card's engine precision; else FP32)
    int8: bool = False  # shorthand: adds "int8" to ``precisions``
    precisions: tuple[str, ...] | str = DEFAULT_PRECISIONS  # fp32 is written whatever this says
    max_batch: int | None = None  # engine profile max for whole-frame stages (default 8)
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    int8_options: int8_graph.Int8Options = field(default_factory=int8_graph.Int8Options)

    @property
    def checkpoints(self) -> list[Path]:
        items = self.checkpoint if isinstance(self.checkpoint, list) else [self.checkpoint]
        return [Path(item) for item in items]

    @property
    def precision_names(self) -> list[str]:
        """``precisions`` as given (a sequence, or one comma-separated string), lower case."""
        items = self.precisions.split(",") if isinstance(self.precisions, str) else self.precisions
        return [item.strip().lower() for item in items]

    @property
    def graphs(self) -> tuple[str, ...]:
        """The precisions written, in ``PRECISIONS`` order: fp32, what ``precisions`` names,
        and int8 where ``int8`` is set (unknown names are ``check_options``' business)."""
        wanted = {"fp32", *self.precision_names}
        if self.int8:
            wanted.add("int8")
        return tuple(p for p in PRECISIONS if p in wanted)


def check_options(options: ExportOptions) -> None:
    """Everything that can be checked before any work: formats (and TensorRT where engines are
    asked for), precisions, and a bundle folder that can be written."""
    check_formats(options)
    check_precisions(options)
    check_output_folder(Path(options.out))


def check_precisions(options: ExportOptions) -> None:
    names = options.precision_names
    unknown = [p or "(empty)" for p in names if p not in PRECISIONS]
    if unknown or not names:
        raise ExportError(
            f"unknown precision(s) in --precisions: {', '.join(unknown) or '(none given)'}",
            f"choose from: {', '.join(PRECISIONS)} (fp32 is always written), "
            "e.g. --precisions fp32,int8",
        )
    if options.half and "fp16" not in options.graphs:
        raise ExportError(
            "--half builds the TensorRT engine from the FP16 graph, which --precisions leaves out",
            "add fp16 to --precisions (e.g. --precisions fp32,fp16), or drop --half",
        )


def check_output_folder(out: Path) -> None:
    """The bundle folder must be creatable (or replaceable) by this process, and an existing
    ``out`` must be a bundle or empty: the export replaces it as a whole."""
    if out.is_symlink() or out.exists():
        if not out.is_dir():
            raise ExportError(
                f"--out '{out}' is a file, not a bundle folder",
                "choose another --out (a new folder, or an existing bundle to replace)",
            )
        if not (out / CARD_NAME).is_file() and any(out.iterdir()):
            raise ExportError(
                f"--out '{out}' is a folder of other files (no {CARD_NAME}): the export "
                "would replace it",
                "choose a new folder, or an existing bundle to replace",
            )
    try:
        check_creatable(out, "--out")
    except AdedgeError as exc:
        raise ExportError(exc.message, exc.hint) from None


def check_formats(options: ExportOptions) -> None:
    """Unknown formats, and engines where TensorRT or a GPU is missing, fail before any work."""
    unknown = [f for f in options.formats if f not in FORMATS]
    if unknown or not options.formats:
        raise ExportError(
            f"unknown format(s): {', '.join(unknown) or '(none)'}",
            f"choose from: {', '.join(FORMATS)} (e.g. --format onnx,engine)",
        )
    if "onnx" not in options.formats:
        raise ExportError(
            "every bundle holds its ONNX graphs: --format must include onnx",
            "use --format onnx,engine",
        )
    if "engine" in options.formats:
        engines.import_tensorrt()
        engines.device_capability()
