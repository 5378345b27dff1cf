"""Export trained checkpoints as a model bundle (docs/architecture.md, Bundle).

Generic over methods: each checkpoint becomes one stage. Export asks the method to fix its
export-time constants on held-out normal inputs (``prepare_export``), traces the inference
module it returns (the pruned subgraph with ``score``, and ``amap`` where the method
localises, computed inside), checks the graph, and runs the export parity check on real
held-out inputs (tiles for a tiled stage). Several checkpoints of one method (IGD's global
and local models) make one bundle whose stage scores add up (Eq. 13). The threshold is then
set on held-out normal *frames* scored by the runtime's own Detector on the written bundle,
so tiling, local max-pooling and the stage sum are exactly those of deployment; where the
stages output ``amap``, their heatmaps on the same frames set the pixel threshold
(``adedge.export.pixel_threshold``). The folder
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
``<bundle>/engines`` (``adedge.runtime.backends.engines``); ``--format triton`` then adds the
written bundle's stages to a Triton model repository (``adedge.export.triton_repo``).

Bad options and an ``out`` that cannot be written fail before any checkpoint is loaded; each
step logs a short line as it starts, and the chosen threshold is logged at the end.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adedge import __version__
from adedge.atomic import atomic_directory, write_json
from adedge.bundle import (
    CARD_NAME,
    Card,
    StageSpec,
    ThresholdSpec,
    sha256_file,
)
from adedge.card import DEFAULT_PIXEL_PERCENTILE, PixelThreshold
from adedge.data import DataSet, load
from adedge.errors import AdedgeError, ExportError
from adedge.export.options import ExportOptions, check_options
from adedge.export.parity import ParityReport, parity_check
from adedge.export.pixel_threshold import calibrate_pixel_threshold
from adedge.export.precision_graphs import PrecisionCheck, precision_metrics, write_precision_graphs
from adedge.export.trace import (
    PARITY_IMAGES,
    calibration_inputs,
    graph_parameter_count,
    output_names,
    rebuild_model,
    stage_spec,
    trace_to_onnx,
)
from adedge.export.triton_repo import add_exported_bundle
from adedge.formats import Format
from adedge.metrics import quantile_threshold
from adedge.registry import get_method
from adedge.runtime.backends import engines
from adedge.runtime.backends.engine_plan import ENGINE_DIR
from adedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from adedge.runtime.detector import Detector
from adedge.runtime.evaluate import detection_quality
from adedge.runtime.frames import run_in_chunks
from adedge.train.checkpoint import Checkpoint, load_checkpoint
from adedge.train.methods.base import score_of


@dataclass
class ExportedStage:
    """One checkpoint traced into one stage of the bundle."""

    spec: StageSpec
    checkpoint: Checkpoint
    facts: dict[str, Any]
    parity: ParityReport
    parameters: int
    precision: dict[str, PrecisionCheck] = field(default_factory=dict)


def calibration_data(checkpoint: Checkpoint, data: str | None) -> DataSet:
    spec = data or checkpoint.data_spec
    try:
        return load(spec)
    except AdedgeError as exc:
        raise AdedgeError(
            f"export needs held-out normal images from '{spec}' for the parity check and the "
            f"threshold, but: {exc.message}",
            "pass --data with a readable copy of the training data",
        ) from None


def score_onnx(backend: OnnxRuntimeBackend, batch: np.ndarray, chunk: int = 256) -> np.ndarray:
    return run_in_chunks(backend.run, batch, chunk, ["score"])["score"].astype(np.float64)


def export_stage(
    checkpoint: Checkpoint,
    dataset: DataSet,
    folder: Path,
    options: ExportOptions,
    log,
    scratch: Path,
) -> ExportedStage:
    """Trace one checkpoint into ``folder``, check its parity on held-out inputs, and write
    its FP16 and INT8 graphs (as ``options.graphs`` asks) with their parity checks."""
    method, config, model = rebuild_model(checkpoint)
    plan, spec = checkpoint.stage_plan, checkpoint.input_spec
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
    stage = stage_spec(plan, spec, onnx_path, tuple(output_names(scorer, inputs[:2])))
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


def stage_parity(
    scorer: torch.nn.Module, backend: OnnxRuntimeBackend, batch: torch.Tensor
) -> ParityReport:
    with torch.no_grad():
        torch_scores = score_of(scorer(batch)).numpy()
    return parity_check(torch_scores, score_onnx(backend, batch.numpy()))


def load_checkpoints(options: ExportOptions, log=print) -> list[Checkpoint]:
    """The checkpoints, checked to be one method with distinct stage names."""
    states = []
    for path in options.checkpoints:
        log(f"loading checkpoint {path}")
        states.append(load_checkpoint(path, options.method))
    methods = {state.method for state in states}
    if len(methods) > 1:
        raise ExportError(
            f"the checkpoints are of different methods ({', '.join(sorted(methods))})",
            "a bundle holds the stages of one method: export them separately",
        )
    names = [state.stage_plan.name for state in states]
    if len(set(names)) < len(names):
        raise ExportError(
            f"two checkpoints are both stage '{names[0]}'",
            "pass one checkpoint per stage (e.g. IGD: one --mode global and one --mode local run)",
        )
    return states


def export_bundle(options: ExportOptions, log=print) -> Path:
    check_options(options)
    started = time.perf_counter()
    states = load_checkpoints(options, log)
    spec = options.data or states[0].data_spec
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
        val_scores, maps, _ = detector.score_images_with_maps(dataset.val.images)
        threshold = ThresholdSpec(
            value=quantile_threshold(val_scores, options.threshold_quantile),
            method=f"quantile {options.threshold_quantile:g}",
            detail=(
                f"{options.threshold_quantile:.0%} of {len(val_scores)} held-out normal "
                f"validation images of '{dataset.spec}' score at or below it"
            ),
            pixel=pixel_threshold(
                maps, options.threshold_quantile, dataset.spec, log, options.pixel_percentile
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
        if Format.ENGINE in options.targets.formats:
            log("engines: building TensorRT engines for this GPU")
            card.metrics["engines"] = build_engines(folder, card, log)
        write_json(folder / CARD_NAME, card.to_dict())
    method = states[0].method
    count = len(dataset.val)
    log(f"threshold {threshold.value:.6g} ({threshold.method} of {count} held-out normal images)")
    graphs = ", ".join(options.graphs)
    log(f"exported {method} ({graphs}) to {options.out} in {time.perf_counter() - started:.1f}s")
    if Format.TRITON in options.targets.formats:
        add_to_repository(options, log)
    return Path(options.out)


def pixel_threshold(
    maps, quantile: float, spec: str, log, percentile: float = DEFAULT_PIXEL_PERCENTILE
) -> PixelThreshold | None:
    """The card's ``threshold.pixel`` from the held-out normal frames' heatmaps (None: the
    bundle has no ``amap``): :mod:`adedge.export.pixel_threshold`."""
    pixel = calibrate_pixel_threshold(
        maps or [], quantile, percentile, what=f"held-out normal validation images of '{spec}'"
    )
    if pixel is not None:
        log(
            f"pixel threshold {pixel.value:.6g} ({pixel.percentile:g}th percentile), "
            f"min area {pixel.min_area} px of {pixel.frame[1]}x{pixel.frame[0]}"
        )
    return pixel


def add_to_repository(options: ExportOptions, log) -> None:
    """``--format triton``: the written bundle's stages into the repository; with
    ``--format engine``, the engines just built for this GPU go in as model.plan."""
    engine = Format.ENGINE in options.targets.formats
    target = "sm{}{}".format(*engines.device_capability()) if engine else None
    add_exported_bundle(Path(options.out), options.repository, target, options.triton_python, log)


def training_summary(exported: ExportedStage) -> dict[str, Any]:
    """The card's ``training`` section: the checkpoint and what it was trained on, and the
    paper's per-image times of the method (`adedge bench` quotes them from here, so the
    runtime needs nothing from the method's file)."""
    checkpoint = exported.checkpoint
    path = checkpoint.path or Path("checkpoint")
    return {
        "checkpoint": str(path.resolve()),
        "checkpoint_sha256": sha256_file(path),
        "epoch": checkpoint.epoch,
        "preset": checkpoint.preset,
        "config": checkpoint.config,
        "data": checkpoint.data,
        "class_names": checkpoint.class_names,
        "labels": checkpoint.labels,
        "export": exported.facts,
        "paper_ms_per_image": get_method(checkpoint.method).paper_ms_per_image,
    }


def make_card(stages: list[ExportedStage], threshold: ThresholdSpec) -> Card:
    """The card; with several stages, ``training`` describes the first and ``stages`` all."""
    training = training_summary(stages[0])
    if len(stages) > 1:
        training["stages"] = {s.spec.name: training_summary(s) for s in stages}
    return Card(
        method=stages[0].checkpoint.method,
        stages=tuple(s.spec for s in stages),
        threshold=threshold,
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


def build_engines(folder: Path, card: Card, log) -> dict[str, Any]:
    """Build every stage's engine into ``<bundle>/engines`` on this GPU (``--format engine``)."""
    built = {}
    for stage in card.stages:
        result = engines.ensure_engine(folder, stage, log=log)
        built[stage.name] = {
            "file": f"{ENGINE_DIR}/{result.engine.name}",
            "key": result.key.to_dict(),
            "build": result.plan.describe(),
            "seconds": round(result.seconds, 2),
            "note": "bound to this GPU and TensorRT: other devices build their own on first use",
        }
    return built
