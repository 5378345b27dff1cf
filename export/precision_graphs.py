"""The lower-precision graphs of a stage: the mixed-precision FP16 twin and the INT8 (QDQ)
graph, each written beside the FP32 graph and checked against it on the same real inputs
(:mod:`adedge.export.parity`), and their test AUROC through the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from adedge.bundle import GraphFile, StageSpec, sha256_file, tile_count
from adedge.data import DataSet
from adedge.errors import ExportError
from adedge.export import fp16_checks, parity
from adedge.export import int8 as int8_graph
from adedge.export.fp16_policy import fp32_island_nodes
from adedge.export.options import ExportOptions
from adedge.export.trace import PARITY_IMAGES, calibration_inputs, spread
from adedge.metrics import auroc
from adedge.runtime.backends import engines
from adedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from adedge.runtime.detector import Detector
from adedge.runtime.evaluate import score_split
from adedge.runtime.frames import run_in_chunks

if TYPE_CHECKING:  # the bundle writer imports this module
    from adedge.export.bundle_writer import ExportedStage
    from adedge.train.checkpoint import Checkpoint

PRECISION_PARITY_INPUTS = 512  # network inputs (images or tiles) for the FP16/INT8 checks


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
    outputs: dict[str, parity.OutputParity]
    conversion: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        if self.variant.startswith("fp16"):  # values, limits and outcome of the FP16 rule
            outputs = {name: parity.fp16_verdict(name, p) for name, p in self.outputs.items()}
        else:  # reported; the INT8 gate is the test AUROC
            outputs = {name: p.to_dict() for name, p in self.outputs.items()}
        data: dict[str, Any] = {"inputs": self.inputs, "outputs": outputs}
        if self.conversion:
            data["conversion"] = self.conversion
        return data


def precision_parity_inputs(dataset: DataSet, checkpoint: Checkpoint) -> np.ndarray:
    """Real inputs for the FP16/INT8 checks: held-out normal and test images (normal and
    anomalous: the score range a deployment sees), as the stage's network sees them."""
    images = list(dataset.val.images[:PARITY_IMAGES])
    if dataset.test is not None:
        images += list(dataset.test.images[:PARITY_IMAGES])
    return spread(calibration_inputs(images, checkpoint), PRECISION_PARITY_INPUTS).numpy()


def run_outputs(backend: OnnxRuntimeBackend, batch: np.ndarray, chunk: int = 128):
    return run_in_chunks(backend.run, batch, chunk)


def compare_graphs(
    stage: StageSpec, reference: Path, candidate: Path, inputs: np.ndarray
) -> dict[str, parity.OutputParity]:
    expected = run_outputs(OnnxRuntimeBackend(reference, stage), inputs)
    got = run_outputs(OnnxRuntimeBackend(candidate, stage), inputs)
    return {name: parity.compare_output(expected[name], got[name]) for name in expected}


def write_precision_graphs(
    checkpoint: Checkpoint,
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
        return _with_engine(stage, options, folder), checks
    inputs = precision_parity_inputs(dataset, checkpoint)
    if "fp16" in graphs:
        stage, checks = write_fp16_graph(checkpoint.method, folder, stage, inputs, log, scratch)
    if "int8" in graphs:
        stage, checks["int8"] = write_int8(checkpoint, dataset, folder, stage, options, inputs, log)
        log_precision(log, stage.name, checks["int8"])
    return _with_engine(stage, options, folder), checks


def _with_engine(stage: StageSpec, options: ExportOptions, folder: Path) -> StageSpec:
    """The stage with how its TensorRT engines are built: precision, batch, workspace, and the
    FP32 graph's layers the FP16 policy keeps in FP32 (for a TensorRT that builds FP16 from
    the FP32 graph with the FP16 flag and must pin them)."""
    precision = "fp16" if options.half else "fp32"
    engine = engines.engine_spec(stage, precision, options.max_batch, options.workspace_mib)
    islands = fp32_island_nodes(onnx.load(str(folder / stage.file)))
    return replace(stage, engine=replace(engine, fp32_layers=tuple(islands)))


def write_fp16_graph(
    method: str, folder: Path, stage: StageSpec, inputs: np.ndarray, log, scratch: Path
) -> tuple[StageSpec, dict[str, PrecisionCheck]]:
    """Convert, lint and check the FP16 graph (on the CPU and emulated)."""
    source = folder / stage.file
    file16 = f"{stage.name}.fp16.onnx"
    log(f"stage '{stage.name}': writing the FP16 graph")
    report, findings = fp16_checks.write_fp16(source, folder / file16)
    if findings:
        raise ExportError(
            f"the FP16 graph of {method} stage '{stage.name}' still reduces in FP16: "
            f"{fp16_checks.describe_findings(findings)}",
            "this is a bug in adedge's FP16 conversion; report it",
        )
    emulated = scratch / f"{stage.name}.fp16-emulated.onnx"
    onnx.save(fp16_checks.emulate_fp16(onnx.load(str(folder / file16))), str(emulated))
    checks = {
        "fp16": PrecisionCheck("fp16", folder / file16, len(inputs), {}, report.to_dict()),
        "fp16_emulated": PrecisionCheck("fp16_emulated", emulated, len(inputs), {}),
    }
    log(f"stage '{stage.name}': FP16 parity on {len(inputs)} real inputs (CPU, emulated)")
    for check in checks.values():
        check.outputs = compare_graphs(stage, source, check.graph, inputs)
        log_precision(log, stage.name, check)
        fail_on_fp16_parity(method, stage.name, check)
    return stage.with_graph("fp16", GraphFile(file16, sha256_file(folder / file16))), checks


FP16_HOW = {"fp16": "on the CPU", "fp16_emulated": "with emulated FP16 activations"}


SKIP_FP16 = (
    "export with --precisions fp32 (or fp32,int8) to skip the FP16 graph, or train longer; "
    "if a well-trained model fails, report it with the method's name (an FP16 hazard may "
    "be missing from the FP32 islands)"
)


def fail_on_fp16_parity(method: str, stage: str, check: PrecisionCheck) -> None:
    failures = parity.fp16_failures(check.outputs)
    if not failures:
        return
    worst = parity.worst_output(check.outputs)
    raise ExportError(
        f"FP16 parity failed for {method} stage '{stage}' {FP16_HOW[check.variant]}: "
        f"output '{worst}' "
        f"{failures[worst]} over {check.inputs} real inputs",
        SKIP_FP16,
    )


def write_int8(
    checkpoint: Checkpoint,
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
    fusion = report.fusion
    log(
        f"stage '{stage.name}': INT8 fuses {fusion.fused_convolutions} of "
        f"{fusion.quantised_convolutions} quantised convs; {report.narrow_nodes} nodes < "
        f"{settings.min_channels} channels stay FP32"
    )
    speed = int8_speed(stage, folder / stage.file, folder / file8, inputs)
    faster = speed["fp32_ms"] / speed["int8_ms"]
    log(
        f"stage '{stage.name}': INT8 speed: {faster:.2f}x FP32's here ({speed['int8_ms']:.2f} "
        f"vs {speed['fp32_ms']:.2f} ms, {speed['rows']} inputs, 1 thread)"
        + ("" if faster > 1 else "; not faster: use FP32")
    )
    check = PrecisionCheck("int8", folder / file8, len(inputs), {}, report.to_dict())
    check.conversion["speed_on_export_machine"] = speed
    check.outputs = compare_graphs(stage, folder / stage.file, folder / file8, inputs)
    return stage.with_graph("int8", GraphFile(file8, sha256_file(folder / file8))), check


SPEED_SECONDS = 0.5  # per graph: a rough check at export, not a benchmark (adedge bench)
SPEED_RUNS = 2  # at least, after a warm-up: IGD's 225-tile FP32 call alone takes 5 s


def int8_speed(stage: StageSpec, fp32: Path, int8: Path, inputs: np.ndarray) -> dict[str, Any]:
    """Median ms per call of the FP32 and INT8 graphs on one frame's batch (a tiled stage's
    tiles, else 8 inputs), 1 thread, with the card's layout: does INT8 pay on this CPU?"""
    from adedge.runtime.bench.timing import time_call

    rows = tile_count(stage.tiling) if stage.tiling is not None else 8
    batch = np.resize(np.asarray(inputs, np.float32), (rows, *np.shape(inputs)[1:]))
    times = {}
    for name, path in (("fp32_ms", fp32), ("int8_ms", int8)):
        backend = OnnxRuntimeBackend(path, stage, threads=1)
        spent = time_call(lambda b=backend: b.run(batch), SPEED_SECONDS, min_runs=SPEED_RUNS)
        times[name] = float(np.median(spent))
        times[name] *= 1e3
    return {**times, "rows": rows, "threads": 1}


VARIANT_LABELS = {"fp16": "FP16 (CPU)", "fp16_emulated": "FP16 (emulated)", "int8": "INT8 (CPU)"}


def log_precision(log, name: str, check: PrecisionCheck) -> None:
    """One line per output: p99 and max |Δ| against FP32, and rho."""
    for output, p in check.outputs.items():
        log(
            f"stage '{name}': {VARIANT_LABELS[check.variant]} {output} vs FP32: p99 |Δ| "
            f"{p.p99_abs_diff:.1e} ({p.relative_diff:.2%} of spread), max "
            f"{p.max_abs_diff:.1e}, rho {p.spearman:.5f}"
        )


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
    method = stages[0].checkpoint.method
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
            entry["rule"] = parity.FP16_RULE
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
    if not abs(delta) <= parity.MAX_AUROC_DELTA:
        raise ExportError(
            f"FP16 parity failed for {method}: output 'score' moves the test AUROC by "
            f"{delta:+.4f} ({fp32:.4f} -> {value:.4f}, limit ±{parity.MAX_AUROC_DELTA}) "
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
