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
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from adedge import __version__
from adedge.atomic import atomic_directory, write_json
from adedge.bundle import CARD_NAME, Card, StageSpec, ThresholdSpec, TilingSpec, sha256_file
from adedge.data import DataSet, load
from adedge.errors import AdedgeError, ExportError
from adedge.metrics import quantile_threshold
from adedge.preprocess import InputSpec, prepare_batch
from adedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from adedge.runtime.detector import AMAP, Detector
from adedge.runtime.evaluate import detection_quality
from adedge.train.checkpoint import load_checkpoint
from adedge.train.methods import load_method
from adedge.train.methods.base import Method, StagePlan, TrainView
from adedge.train.trainer import score_of
from adedge.train.views import grid_tiles

OPSET = 17
INPUT_NAME = "image"
PARITY_IMAGES = 256


@dataclass
class ExportOptions:
    checkpoint: Path | list[Path]  # one per stage: IGD's global and local runs make one bundle
    out: Path
    method: str | None = None
    data: str | None = None  # where held-out normal images come from; default: the training data
    threshold_quantile: float = 0.99
    opset: int = OPSET

    @property
    def checkpoints(self) -> list[Path]:
        items = self.checkpoint if isinstance(self.checkpoint, list) else [self.checkpoint]
        return [Path(item) for item in items]


@dataclass
class ParityReport:
    images: int
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


@dataclass
class ExportedStage:
    """One checkpoint traced into one stage of the bundle."""

    spec: StageSpec
    checkpoint: dict[str, Any]
    facts: dict[str, Any]
    parity: ParityReport
    parameters: int


def rebuild_model(checkpoint: dict[str, Any]) -> tuple[Method, Any, torch.nn.Module]:
    """The method, its config and the full training model with the checkpoint's weights."""
    method = load_method(checkpoint["method"])
    config = method.config_from_dict(checkpoint["config"])
    model = method.build(config, len(checkpoint["class_names"]))
    model.load_state_dict(checkpoint["model"])
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
    checkpoint: dict[str, Any], val_images: list[np.ndarray], folder: Path, opset: int, log
) -> ExportedStage:
    """Trace one checkpoint into ``folder`` and check its parity on held-out inputs."""
    method, config, model = rebuild_model(checkpoint)
    plan = stage_plan_of(checkpoint)
    spec = InputSpec.from_dict(checkpoint["input_spec"])
    inputs = calibration_inputs(val_images, checkpoint)
    with torch.no_grad():
        facts = method.prepare_export(model, config, inputs)
    scorer = method.inference_module(model).eval()
    file = f"{plan.name}.onnx"
    onnx_path = folder / file
    trace_to_onnx(scorer, spec, onnx_path, opset)
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
    parity = stage_parity(scorer, OnnxRuntimeBackend(onnx_path, stage), inputs[:PARITY_IMAGES])
    what = "tiles" if plan.tiled else "images"
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
    return ExportedStage(stage, checkpoint, facts, parity, graph_parameter_count(onnx_path))


def stage_parity(
    scorer: torch.nn.Module, backend: OnnxRuntimeBackend, batch: torch.Tensor
) -> ParityReport:
    with torch.no_grad():
        torch_scores = score_of(scorer(batch)).numpy()
    return parity_check(torch_scores, score_onnx(backend, batch.numpy()))


def load_checkpoints(options: ExportOptions) -> list[dict[str, Any]]:
    """The checkpoints, checked to be one method with distinct stage names."""
    states = [load_checkpoint(path, options.method) for path in options.checkpoints]
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


def export_bundle(options: ExportOptions, log=print) -> Path:
    states = load_checkpoints(options)
    dataset = calibration_data(states[0], options.data)
    started = time.perf_counter()
    with atomic_directory(options.out) as folder:
        stages = [
            export_stage(state, dataset.val.images, folder, options.opset, log) for state in states
        ]
        card = make_card(stages, ThresholdSpec(0.0, "not set yet"))
        write_json(folder / CARD_NAME, card.to_dict())
        detector = Detector(folder)
        val_scores, _ = detector.score_images(dataset.val.images)
        threshold = quantile_threshold(val_scores, options.threshold_quantile)
        card = replace(
            card,
            threshold=ThresholdSpec(
                value=threshold,
                method=f"quantile {options.threshold_quantile:g}",
                detail=(
                    f"{options.threshold_quantile:.0%} of {len(val_scores)} held-out normal "
                    f"validation images of '{dataset.spec}' score at or below it"
                ),
            ),
            metrics=export_metrics(dataset, detector, val_scores, stages),
        )
        write_json(folder / CARD_NAME, card.to_dict())
    method = states[0]["method"]
    log(f"exported {method} to {options.out} in {time.perf_counter() - started:.1f}s")
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
    dataset: DataSet, detector: Detector, val_scores: np.ndarray, stages: list[ExportedStage]
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
        quality = detection_quality(detector, test)
        metrics.update(quality)
        metrics["test_auroc_note"] = "measured at export for information; selected nothing"
    return metrics
