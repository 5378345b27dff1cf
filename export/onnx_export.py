"""Export trained checkpoints as a model bundle (DESIGN §4).

Generic over methods: each checkpoint becomes one stage. Export asks the method to fix its
export-time constants on held-out normal inputs (``prepare_export``), traces the inference
module it returns (the pruned subgraph with ``score``, and ``amap`` where the method
localises, computed inside), checks the graph, and runs the export parity check on real
held-out inputs (tiles for a tiled stage). Several checkpoints of one method (IGD's global
and local models) make one bundle whose stage scores add up (Eq. 13). The threshold is then
set on held-out normal *frames* scored by the runtime's own Detector on the written bundle,
so tiling, local max-pooling and the stage sum are exactly those of deployment. The folder
is written atomically: a failed export leaves any previous bundle untouched.

``precisions`` says which graphs a stage carries: ``fp32`` always; ``fp16`` (the default
adds it) is the mixed-precision twin ``<stage>.fp16.onnx`` (``adedge.export.fp16``), checked
against FP32 on real held-out normal and test inputs, on ONNX Runtime's CPU provider and
with FP16 activations emulated, by the rule of ``fp16``'s docstring (max |Δ| against the
FP32 scores' spread, Spearman rho where the scores are spread, |ΔAUROC| <= 0.005 through the
Detector where the test split has labels); otherwise the export fails naming the method,
stage, output and number, and says how to skip the FP16 graph. ``int8`` (``--int8``)
adds ``<stage>.int8.onnx`` (``adedge.export.int8``), refused if its test AUROC drops by more
than ``Int8Options.max_auroc_drop`` (0.01); ``--format engine`` builds TensorRT engines into
``<bundle>/engines`` (``adedge.export.tensorrt_build``).

Bad options and an ``out`` that cannot be written fail before any checkpoint is loaded; each
step logs a short line as it starts, and the chosen threshold is logged at the end.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from adedge import __version__
from adedge.atomic import atomic_directory, write_json
from adedge.bundle import (
    CARD_NAME,
    DEFAULT_WORKSPACE_MIB,
    Card,
    StageSpec,
    ThresholdSpec,
    TilingSpec,
    sha256_file,
)
from adedge.data import DataSet, load
from adedge.errors import AdedgeError, CheckpointError, ExportError
from adedge.export import fp16 as fp16_graph
from adedge.export import int8 as int8_graph
from adedge.export import tensorrt_build
from adedge.metrics import auroc, quantile_threshold
from adedge.outputs import check_creatable
from adedge.preprocess import InputSpec, prepare_batch
from adedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from adedge.runtime.detector import AMAP, Detector
from adedge.runtime.evaluate import detection_quality, score_split
from adedge.train.checkpoint import load_checkpoint, load_weights
from adedge.train.methods import load_method
from adedge.train.methods.base import Method, StagePlan, TrainView, score_of
from adedge.train.views import grid_tiles

OPSET = 17
INPUT_NAME = "image"
PARITY_IMAGES = 256
PRECISION_PARITY_INPUTS = 512  # network inputs (images or tiles) for the FP16/INT8 checks
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


@dataclass
class ParityReport:
    images: int
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


PRECISION_NOTES = {
    "fp16": "the FP16 graph on ONNX Runtime's CPU provider (FP16 weights; the provider runs "
    "most ops in FP32 and drops the Casts around them, so activations are not rounded)",
    "fp16_emulated": "the FP16 graph with every FP16 tensor rounded to FP16 through explicit "
    "Casts (storage rounding and overflow as on a GPU, FP32 accumulation inside each op)",
    "int8": "the INT8 (QDQ) graph on ONNX Runtime's CPU provider",
}


@dataclass
class PrecisionCheck:
    """A lower-precision graph of one stage against its FP32 graph on real inputs;
    ``graph`` is the file that was run (the emulation lives outside the bundle)."""

    variant: str
    graph: Path
    inputs: int
    outputs: dict[str, fp16_graph.OutputParity]
    conversion: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        if self.variant.startswith("fp16"):  # values, limits and outcome of the FP16 rule
            outputs = {name: fp16_graph.fp16_verdict(name, p) for name, p in self.outputs.items()}
        else:  # reported; the INT8 gate is the test AUROC
            outputs = {name: p.to_dict() for name, p in self.outputs.items()}
        data: dict[str, Any] = {"inputs": self.inputs, "outputs": outputs}
        if self.conversion:
            data["conversion"] = self.conversion
        return data


@dataclass
class ExportedStage:
    """One checkpoint traced into one stage of the bundle."""

    spec: StageSpec
    checkpoint: dict[str, Any]
    facts: dict[str, Any]
    parity: ParityReport
    parameters: int
    precision: dict[str, PrecisionCheck] = field(default_factory=dict)


def rebuild_model(checkpoint: dict[str, Any]) -> tuple[Method, Any, torch.nn.Module]:
    """The method, its config and the full training model with the checkpoint's weights."""
    method = load_method(checkpoint["method"])
    config = method.config_from_dict(checkpoint["config"])
    try:
        model = method.build(config, len(checkpoint["class_names"]))
    except ValueError as exc:
        raise CheckpointError(
            f"checkpoint '{checkpoint['path']}' holds a config {method.name} cannot build: {exc}",
            "use a checkpoint written by `adedge train`",
        ) from None
    load_weights(model, checkpoint)  # weights that do not fit are one line, not a traceback
    return method, config, model.eval()


def rebuild_scorer(checkpoint: dict[str, Any]) -> torch.nn.Module:
    """The method's inference module with the checkpoint's weights, in eval mode."""
    method, _, model = rebuild_model(checkpoint)
    return method.inference_module(model).eval()


def output_names(scorer: torch.nn.Module, example: torch.Tensor) -> list[str]:
    with torch.no_grad():
        out = scorer(example)
    return ["score", AMAP] if isinstance(out, (tuple, list)) else ["score"]


def trace_to_onnx(scorer: torch.nn.Module, spec: InputSpec, path: Path, opset: int) -> None:
    """Static H/W, dynamic batch; BatchNorm folds into the convolutions (eval mode)."""
    example = torch.zeros(2, spec.channels, spec.height, spec.width)
    names = output_names(scorer, example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            scorer,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in names}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)


def graph_parameter_count(path: Path) -> int:
    model = onnx.load(str(path))
    return int(sum(np.prod(t.dims) for t in model.graph.initializer))


def parity_check(torch_scores: np.ndarray, onnx_scores: np.ndarray) -> ParityReport:
    """FP32 rule of DESIGN §4: max |Δscore| <= 1e-4 · max(1, |score|)."""
    diff = np.abs(torch_scores.astype(np.float64) - onnx_scores.astype(np.float64))
    scale = max(1.0, float(np.abs(torch_scores).max()))
    return ParityReport(len(diff), float(diff.max()), 1e-4 * scale)


def calibration_data(checkpoint: dict[str, Any], data: str | None) -> DataSet:
    spec = data or checkpoint["data"]["data"]
    try:
        return load(spec)
    except AdedgeError as exc:
        raise AdedgeError(
            f"export needs held-out normal images from '{spec}' for the parity check and the "
            f"threshold, but: {exc.message}",
            "pass --data with a readable copy of the training data",
        ) from None


def score_onnx(backend: OnnxRuntimeBackend, batch: np.ndarray, chunk: int = 256) -> np.ndarray:
    parts = [backend.run(batch[i : i + chunk])["score"] for i in range(0, len(batch), chunk)]
    return np.concatenate(parts).astype(np.float64)


def stage_plan_of(checkpoint: dict[str, Any]) -> StagePlan:
    """The checkpoint's stage plan (older checkpoints: one whole-image 'global' stage)."""
    plan = dict(checkpoint.get("stage_plan") or {})
    if not plan:
        return StagePlan(frame_size=int(checkpoint["input_spec"]["height"]))
    plan["view"] = TrainView(**plan.get("view", {}))
    return StagePlan(**plan)


def calibration_inputs(images: list[np.ndarray], checkpoint: dict[str, Any]) -> torch.Tensor:
    """Held-out normal images as the stage's network sees them (grid tiles if tiled)."""
    plan = stage_plan_of(checkpoint)
    frame = checkpoint.get("frame_spec") or checkpoint["input_spec"]
    batch = torch.from_numpy(prepare_batch(images, InputSpec.from_dict(frame)))
    return grid_tiles(batch, plan)


def export_stage(
    checkpoint: dict[str, Any],
    dataset: DataSet,
    folder: Path,
    options: ExportOptions,
    log,
    scratch: Path,
) -> ExportedStage:
    """Trace one checkpoint into ``folder``, check its parity on held-out inputs, and write
    its FP16 and INT8 graphs (as ``options.graphs`` asks) with their parity checks."""
    method, config, model = rebuild_model(checkpoint)
    plan = stage_plan_of(checkpoint)
    spec = InputSpec.from_dict(checkpoint["input_spec"])
    inputs = calibration_inputs(dataset.val.images, checkpoint)
    what = "tiles" if plan.tiled else "images"
    log(f"stage '{plan.name}': export constants from {len(inputs)} held-out {what}")
    with torch.no_grad():
        facts = method.prepare_export(model, config, inputs)
    scorer = method.inference_module(model).eval()
    file = f"{plan.name}.onnx"
    onnx_path = folder / file
    log(f"stage '{plan.name}': tracing to ONNX (opset {options.opset})")
    trace_to_onnx(scorer, spec, onnx_path, options.opset)
    tiling = None
    if plan.tiled:
        size = (plan.frame_size, plan.frame_size)
        tiling = TilingSpec(size, plan.tile, plan.stride or plan.tile, plan.padding)
    names = output_names(scorer, inputs[:2])
    stage = StageSpec(
        name=plan.name,
        file=file,
        sha256=sha256_file(onnx_path),
        input_name=INPUT_NAME,
        input=spec,
        outputs=tuple(names),
        tiling=tiling,
        reduce=plan.reduce,
        weight=plan.weight,
    )
    log(f"stage '{plan.name}': parity torch vs ONNX on {min(len(inputs), PARITY_IMAGES)} {what}")
    parity = stage_parity(scorer, OnnxRuntimeBackend(onnx_path, stage), inputs[:PARITY_IMAGES])
    log(
        f"stage '{plan.name}': parity max |Δscore| {parity.max_abs_diff:.2e} over "
        f"{parity.images} held-out {what} (tolerance {parity.tolerance:.0e})"
    )
    if not parity.passed:
        raise ExportError(
            f"export parity check failed for stage '{plan.name}': ONNX and torch scores differ "
            f"by {parity.max_abs_diff:.3g} > {parity.tolerance:.0e}",
            "this is a bug in the method's inference module or the exporter; report it",
        )
    stage, checks = write_precision_graphs(
        checkpoint, dataset, folder, stage, options, log, scratch
    )
    return ExportedStage(stage, checkpoint, facts, parity, graph_parameter_count(onnx_path), checks)


def spread(rows: torch.Tensor, limit: int) -> torch.Tensor:
    """At most ``limit`` rows, evenly spaced (tiles of every image, not the first ones)."""
    if len(rows) <= limit:
        return rows
    return rows[np.linspace(0, len(rows) - 1, limit).round().astype(int)]


def precision_parity_inputs(dataset: DataSet, checkpoint: dict[str, Any]) -> np.ndarray:
    """Real inputs for the FP16/INT8 checks: held-out normal and test images (normal and
    anomalous: the score range a deployment sees), as the stage's network sees them."""
    images = list(dataset.val.images[:PARITY_IMAGES])
    if dataset.test is not None:
        images += list(dataset.test.images[:PARITY_IMAGES])
    return spread(calibration_inputs(images, checkpoint), PRECISION_PARITY_INPUTS).numpy()


def run_outputs(backend: OnnxRuntimeBackend, batch: np.ndarray, chunk: int = 128):
    parts = [backend.run(batch[i : i + chunk]) for i in range(0, len(batch), chunk)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def compare_graphs(
    stage: StageSpec, reference: Path, candidate: Path, inputs: np.ndarray
) -> dict[str, fp16_graph.OutputParity]:
    expected = run_outputs(OnnxRuntimeBackend(reference, stage), inputs)
    got = run_outputs(OnnxRuntimeBackend(candidate, stage), inputs)
    return {name: fp16_graph.compare_output(expected[name], got[name]) for name in expected}


def write_precision_graphs(
    checkpoint: dict[str, Any],
    dataset: DataSet,
    folder: Path,
    stage: StageSpec,
    options: ExportOptions,
    log,
    scratch: Path,
) -> tuple[StageSpec, dict[str, PrecisionCheck]]:
    """``<stage>.fp16.onnx`` and ``.int8.onnx`` (as ``options.graphs`` asks), their parity,
    and the card's engine spec.

    The FP16 graph is checked twice against FP32 on the same real inputs: as ONNX Runtime
    runs it on the CPU, and with its FP16 activations emulated (see ``fp16.emulate_fp16``);
    both must pass the rule of ``fp16``'s docstring for every output.
    """
    graphs = options.graphs
    checks: dict[str, PrecisionCheck] = {}
    if "fp16" not in graphs and "int8" not in graphs:
        return _with_engine(stage, options), checks
    inputs = precision_parity_inputs(dataset, checkpoint)
    if "fp16" in graphs:
        stage, checks = write_fp16_graph(checkpoint["method"], folder, stage, inputs, log, scratch)
    if "int8" in graphs:
        stage, checks["int8"] = write_int8(checkpoint, dataset, folder, stage, options, inputs, log)
        log_precision(log, stage.name, checks["int8"])
    return _with_engine(stage, options), checks


def _with_engine(stage: StageSpec, options: ExportOptions) -> StageSpec:
    precision = "fp16" if options.half else "fp32"
    engine = tensorrt_build.engine_spec(stage, precision, options.max_batch, options.workspace_mib)
    return replace(stage, engine=engine)


def write_fp16_graph(
    method: str, folder: Path, stage: StageSpec, inputs: np.ndarray, log, scratch: Path
) -> tuple[StageSpec, dict[str, PrecisionCheck]]:
    """Convert, lint and check the FP16 graph (on the CPU and emulated)."""
    source = folder / stage.file
    file16 = f"{stage.name}.fp16.onnx"
    log(f"stage '{stage.name}': writing the FP16 graph")
    report, findings = fp16_graph.write_fp16(source, folder / file16)
    if findings:
        raise ExportError(
            f"the FP16 graph of {method} stage '{stage.name}' still reduces in FP16: "
            f"{fp16_graph.describe_findings(findings)}",
            "this is a bug in adedge's FP16 conversion; report it",
        )
    emulated = scratch / f"{stage.name}.fp16-emulated.onnx"
    onnx.save(fp16_graph.emulate_fp16(onnx.load(str(folder / file16))), str(emulated))
    checks = {
        "fp16": PrecisionCheck("fp16", folder / file16, len(inputs), {}, report.to_dict()),
        "fp16_emulated": PrecisionCheck("fp16_emulated", emulated, len(inputs), {}),
    }
    log(f"stage '{stage.name}': FP16 parity on {len(inputs)} real inputs (CPU, emulated)")
    for check in checks.values():
        check.outputs = compare_graphs(stage, source, check.graph, inputs)
        log_precision(log, stage.name, check)
        fail_on_fp16_parity(method, stage.name, check)
    stage = replace(stage, fp16_file=file16, fp16_sha256=sha256_file(folder / file16))
    return stage, checks


FP16_HOW = {"fp16": "on the CPU", "fp16_emulated": "with emulated FP16 activations"}
SKIP_FP16 = (
    "export with --precisions fp32 (or fp32,int8) to skip the FP16 graph, or train longer; "
    "if a well-trained model fails, report it with the method's name (an FP16 hazard may "
    "be missing from the FP32 islands)"
)


def fail_on_fp16_parity(method: str, stage: str, check: PrecisionCheck) -> None:
    failures = fp16_graph.fp16_failures(check.outputs)
    if not failures:
        return
    worst = fp16_graph.worst_output(check.outputs)
    raise ExportError(
        f"FP16 parity failed for {method} stage '{stage}' {FP16_HOW[check.variant]}: "
        f"output '{worst}' "
        f"{failures[worst]} over {check.inputs} real inputs",
        SKIP_FP16,
    )


def write_int8(
    checkpoint: dict[str, Any],
    dataset: DataSet,
    folder: Path,
    stage: StageSpec,
    options: ExportOptions,
    inputs: np.ndarray,
    log=print,
) -> tuple[StageSpec, PrecisionCheck]:
    settings = options.int8_options
    images = dataset.train.images[: settings.calibration_images]
    calibration = spread(calibration_inputs(images, checkpoint), settings.calibration_images)
    file8 = f"{stage.name}.int8.onnx"
    log(f"stage '{stage.name}': INT8 calibration on {len(calibration)} normal training inputs")
    report = int8_graph.quantize_int8(
        folder / stage.file, folder / file8, stage.input_name, calibration.numpy(), settings
    )
    check = PrecisionCheck("int8", folder / file8, len(inputs), {}, report.to_dict())
    check.outputs = compare_graphs(stage, folder / stage.file, folder / file8, inputs)
    return replace(stage, int8_file=file8, int8_sha256=sha256_file(folder / file8)), check


VARIANT_LABELS = {"fp16": "FP16 (CPU)", "fp16_emulated": "FP16 (emulated)", "int8": "INT8 (CPU)"}


def log_precision(log, name: str, check: PrecisionCheck) -> None:
    """One line per output: p99 and max |Δ| against FP32, and rho."""
    for output, p in check.outputs.items():
        log(
            f"stage '{name}': {VARIANT_LABELS[check.variant]} {output} vs FP32: p99 |Δ| "
            f"{p.p99_abs_diff:.1e} ({p.relative_diff:.2%} of spread), max "
            f"{p.max_abs_diff:.1e}, rho {p.spearman:.5f}"
        )


def stage_parity(
    scorer: torch.nn.Module, backend: OnnxRuntimeBackend, batch: torch.Tensor
) -> ParityReport:
    with torch.no_grad():
        torch_scores = score_of(scorer(batch)).numpy()
    return parity_check(torch_scores, score_onnx(backend, batch.numpy()))


def load_checkpoints(options: ExportOptions, log=print) -> list[dict[str, Any]]:
    """The checkpoints, checked to be one method with distinct stage names."""
    states = []
    for path in options.checkpoints:
        log(f"loading checkpoint {path}")
        states.append(load_checkpoint(path, options.method))
    methods = {state["method"] for state in states}
    if len(methods) > 1:
        raise ExportError(
            f"the checkpoints are of different methods ({', '.join(sorted(methods))})",
            "a bundle holds the stages of one method: export them separately",
        )
    names = [stage_plan_of(state).name for state in states]
    if len(set(names)) < len(names):
        raise ExportError(
            f"two checkpoints are both stage '{names[0]}'",
            "pass one checkpoint per stage (e.g. IGD: one --mode global and one --mode local run)",
        )
    return states


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
        tensorrt_build.import_tensorrt()
        tensorrt_build.device_capability()


def export_bundle(options: ExportOptions, log=print) -> Path:
    check_options(options)
    started = time.perf_counter()
    states = load_checkpoints(options, log)
    spec = options.data or states[0]["data"]["data"]
    log(f"reading held-out data '{spec}'")
    dataset = calibration_data(states[0], options.data)
    test = len(dataset.test) if dataset.test is not None else 0
    log(f"data: {len(dataset.val)} held-out normal, {test} test images")
    with tempfile.TemporaryDirectory() as scratch, atomic_directory(options.out) as folder:
        stages = [
            export_stage(state, dataset, folder, options, log, Path(scratch)) for state in states
        ]
        card = make_card(stages, ThresholdSpec(0.0, "not set yet"))
        write_json(folder / CARD_NAME, card.to_dict())
        detector = Detector(folder)
        log(f"threshold: scoring {len(dataset.val)} held-out normal images")
        val_scores, _ = detector.score_images(dataset.val.images)
        threshold = ThresholdSpec(
            value=quantile_threshold(val_scores, options.threshold_quantile),
            method=f"quantile {options.threshold_quantile:g}",
            detail=(
                f"{options.threshold_quantile:.0%} of {len(val_scores)} held-out normal "
                f"validation images of '{dataset.spec}' score at or below it"
            ),
        )
        card = replace(
            card,
            threshold=threshold,
            metrics=export_metrics(dataset, detector, val_scores, stages, log),
        )
        card.metrics["precision"] = precision_metrics(
            dataset, folder, detector, stages, log, options.int8_options
        )
        if "engine" in options.formats:
            log("engines: building TensorRT engines for this GPU")
            card.metrics["engines"] = build_engines(folder, card, log)
        write_json(folder / CARD_NAME, card.to_dict())
    method = states[0]["method"]
    count = len(dataset.val)
    log(f"threshold {threshold.value:.6g} ({threshold.method} of {count} held-out normal images)")
    graphs = ", ".join(options.graphs)
    log(f"exported {method} ({graphs}) to {options.out} in {time.perf_counter() - started:.1f}s")
    return Path(options.out)


def training_summary(exported: ExportedStage) -> dict[str, Any]:
    checkpoint = exported.checkpoint
    return {
        "checkpoint": str(Path(checkpoint["path"]).resolve()),
        "checkpoint_sha256": sha256_file(checkpoint["path"]),
        "epoch": checkpoint["epoch"],
        "preset": checkpoint.get("preset"),
        "config": checkpoint["config"],
        "data": checkpoint["data"],
        "class_names": checkpoint["class_names"],
        "labels": checkpoint.get("labels"),
        "export": exported.facts,
    }


def make_card(stages: list[ExportedStage], threshold: ThresholdSpec) -> Card:
    """The card; with several stages, ``training`` describes the first and ``stages`` all."""
    training = training_summary(stages[0])
    if len(stages) > 1:
        training["stages"] = {s.spec.name: training_summary(s) for s in stages}
    return Card(
        method=stages[0].checkpoint["method"],
        stages=tuple(s.spec for s in stages),
        threshold=threshold,
        combine="sum",
        training=training,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        adedge_version=__version__,
    )


def export_metrics(
    dataset: DataSet,
    detector: Detector,
    val_scores: np.ndarray,
    stages: list[ExportedStage],
    log=print,
) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "parity": {
            s.spec.name: {
                "inputs": s.parity.images,
                "max_abs_diff": s.parity.max_abs_diff,
                "tolerance": s.parity.tolerance,
            }
            for s in stages
        },
        "graph_parameters": {s.spec.name: s.parameters for s in stages},
        "val_normal_scores": {
            "n": len(val_scores),
            "mean": float(val_scores.mean()),
            "std": float(val_scores.std()),
            "p50": float(np.quantile(val_scores, 0.5)),
            "p99": float(np.quantile(val_scores, 0.99)),
        },
    }
    test = dataset.test
    if test is not None and 0 < test.labels.sum() < len(test):
        log(f"metrics: test AUROC on {len(test)} test images (for information)")
        quality = detection_quality(detector, test)
        log(f"FP32 test AUROC {quality['test_auroc']:.4f}")
        metrics.update(quality)
        metrics["test_auroc_note"] = "measured at export for information; selected nothing"
    return metrics


def precision_metrics(
    dataset: DataSet,
    folder: Path,
    detector: Detector,
    stages: list[ExportedStage],
    log,
    settings: int8_graph.Int8Options = int8_graph.Int8Options(),
) -> dict[str, Any]:
    """Per-stage parity of the FP16 and INT8 graphs, and their test AUROC through the
    runtime (tiling, reduction, stage sum) against FP32's: FP16 must stay within
    ``fp16.MAX_AUROC_DELTA``, INT8 may not drop by more than ``settings.max_auroc_drop``."""
    method = stages[0].checkpoint["method"]
    test = dataset.test
    labelled = test is not None and 0 < test.labels.sum() < len(test)
    reference = score_split(detector, test.images) if labelled else None
    result: dict[str, Any] = {}
    for variant in ("fp16", "fp16_emulated", "int8"):
        checks = {s.spec.name: s.precision[variant] for s in stages if variant in s.precision}
        if not checks:
            continue
        entry: dict[str, Any] = {"what": PRECISION_NOTES[variant]}
        if variant.startswith("fp16"):
            entry["rule"] = fp16_graph.FP16_RULE
        else:
            entry["max_auroc_drop"] = settings.max_auroc_drop
        entry["stages"] = {name: c.to_dict() for name, c in checks.items()}
        result[variant] = entry
        if not labelled:
            entry["test_auroc_note"] = "not measured: the data has no labelled test split"
            continue
        label = VARIANT_LABELS[variant]
        log(f"{label}: test AUROC on {len(test)} test images")
        scores = score_split(swapped(detector, folder, checks), test.images)
        if variant == "int8":
            fp32, value = int8_graph.check_int8_auroc(
                method, test.labels, reference, scores, settings
            )
        else:
            fp32, value = check_fp16_auroc(method, variant, test.labels, reference, scores)
        delta = value - fp32
        entry.update(test_auroc_fp32=fp32, test_auroc=value, delta_auroc=delta)
        log(f"{label} test AUROC {value:.4f} vs FP32 {fp32:.4f} (Δ {delta:+.4f})")
    return result


def check_fp16_auroc(
    method: str, variant: str, labels: np.ndarray, fp32_scores: np.ndarray, scores: np.ndarray
) -> tuple[float, float]:
    """The FP32 and FP16 test AUROCs; an FP16 graph that moves it by more than
    ``fp16.MAX_AUROC_DELTA`` is refused."""
    fp32, value = auroc(labels, fp32_scores), auroc(labels, scores)
    delta = value - fp32
    if not abs(delta) <= fp16_graph.MAX_AUROC_DELTA:
        raise ExportError(
            f"FP16 parity failed for {method}: output 'score' moves the test AUROC by "
            f"{delta:+.4f} ({fp32:.4f} -> {value:.4f}, limit ±{fp16_graph.MAX_AUROC_DELTA}) "
            f"{FP16_HOW[variant]}",
            SKIP_FP16,
        )
    return fp32, value


def swapped(detector: Detector, folder: Path, checks: dict[str, PrecisionCheck]) -> Detector:
    """A Detector on the bundle whose stages run the checked graphs instead of FP32."""
    other = Detector(folder)
    for stage in other.stages:
        stage.backend = OnnxRuntimeBackend(checks[stage.spec.name].graph, stage.spec)
    return other


def build_engines(folder: Path, card: Card, log) -> dict[str, Any]:
    """Build every stage's engine into ``<bundle>/engines`` on this GPU (``--format engine``)."""
    built = {}
    for stage in card.stages:
        result = tensorrt_build.ensure_engine(folder, stage, log=log)
        built[stage.name] = {
            "file": f"{tensorrt_build.ENGINE_DIR}/{result.engine.name}",
            "key": result.key.to_dict(),
            "build": result.plan.describe(),
            "seconds": round(result.seconds, 2),
            "note": "bound to this GPU and TensorRT: other devices build their own on first use",
        }
    return built
