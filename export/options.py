"""What an export is asked to do (:class:`ExportOptions`), checked before any checkpoint is
loaded: formats and precisions (by :func:`adedge.formats.check_export`, as the CLI checks
them), TensorRT where engines are asked for, a bundle folder this process can write, and,
for ``triton``, a repository folder it can write and Triton's schema checker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from adedge.bundle import (
    CARD_NAME,
    DEFAULT_WORKSPACE_MIB,
)
from adedge.card import DEFAULT_PIXEL_PERCENTILE
from adedge.errors import AdedgeError, ExportError
from adedge.export import int8 as int8_graph
from adedge.export.pixel_threshold import check_percentile
from adedge.export.trace import OPSET
from adedge.export.triton_repo import check_repository_target
from adedge.formats import DEFAULT_GRAPHS, ExportTargets, Format, Precision, check_export
from adedge.outputs import check_creatable
from adedge.paths import MODELS_DIR
from adedge.runtime.backends import engines

DEFAULT_TRITON_REPO = MODELS_DIR / "triton"  # --triton-repo's default


@dataclass
class ExportOptions:
    checkpoint: Path | list[Path]  # one per stage: IGD's global and local runs make one bundle
    out: Path
    method: str | None = None
    data: str | None = None  # where held-out normal images come from; default: the training data
    threshold_quantile: float = 0.99
    # the pixel threshold (models with a heatmap): this percentile of held-out normal pixels
    pixel_percentile: float = DEFAULT_PIXEL_PERCENTILE
    opset: int = OPSET
    formats: tuple[str, ...] | str = (Format.ONNX,)  # "engine": also build TensorRT engines here
    half: bool = False  # engines in FP16 (the card's engine precision; else FP32)
    int8: bool = False  # shorthand: adds "int8" to ``precisions``
    precisions: tuple[str, ...] | str = DEFAULT_GRAPHS  # fp32 is written whatever this says
    max_batch: int | None = None  # engine profile max for whole-frame stages (default 8)
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    int8_options: int8_graph.Int8Options = field(default_factory=int8_graph.Int8Options)
    # "triton" in formats: the model repository the bundle's stages are added to (None:
    # DEFAULT_TRITON_REPO), and a python with tritonclient (None: $ADEDGE_TRITON_PYTHON,
    # else this one). ``out`` stays the bundle: the repository is built from it.
    triton_repo: Path | None = None
    triton_python: str | None = None

    @property
    def checkpoints(self) -> list[Path]:
        items = self.checkpoint if isinstance(self.checkpoint, list) else [self.checkpoint]
        return [Path(item) for item in items]

    @property
    def targets(self) -> ExportTargets:
        """The formats, graphs and engine settings, checked (a one-line ExportError)."""
        return check_export(
            self.formats,
            self.precisions,
            half=self.half,
            int8=self.int8,
            max_batch=self.max_batch,
            workspace_mib=self.workspace_mib,
            triton_repo=self.triton_repo,
            triton_python=self.triton_python,
        )

    @property
    def graphs(self) -> tuple[Precision, ...]:
        """The precisions written, in table order: fp32, what ``precisions`` names, and
        int8 where ``int8`` is set."""
        return self.targets.graphs

    @property
    def repository(self) -> Path:
        """Where ``--format triton`` adds the bundle's stages."""
        return Path(self.triton_repo) if self.triton_repo is not None else DEFAULT_TRITON_REPO


def check_options(options: ExportOptions) -> None:
    """Everything that can be checked before any work: formats, precisions and engine
    settings, TensorRT and a GPU where engines are asked for, a bundle folder that can be
    written, and for ``triton`` a repository folder that can be and a schema checker."""
    formats = options.targets.formats
    check_percentile(options.pixel_percentile)
    if Format.ENGINE in formats:
        check_engine_machine()
    check_output_folder(Path(options.out))
    if Format.TRITON in formats:
        check_repository_target(options.repository, options.triton_python)


def check_engine_machine() -> None:
    """``--format engine`` needs TensorRT and a GPU here: say so before any work."""
    try:
        engines.import_tensorrt()
        engines.device_capability()
    except engines.TensorRTUnavailable as exc:
        reason = exc.message.split(": ", 1)[-1]
        raise ExportError(
            f"--format engine not supported on this machine: {reason}",
            "export with --format onnx here (the bundle carries the FP16 graph) and build "
            "the engine on the GPU: `adedge export --format onnx,engine` there, or let "
            "`adedge stream --backend tensorrt` build it on first use",
        ) from None


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
