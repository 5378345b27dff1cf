"""Export a trained checkpoint as a model bundle (DESIGN §4).

Generic over methods: it traces whatever inference module the method returns (the pruned
subgraph with the score computed inside), checks the graph, runs the export parity check on
real held-out images, sets the threshold on held-out normal scores computed by the exported
graph itself, and writes the bundle folder atomically (a failed export leaves any previous
bundle untouched).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from adedge import __version__
from adedge.atomic import atomic_directory, write_json
from adedge.bundle import CARD_NAME, Card, StageSpec, ThresholdSpec, sha256_file
from adedge.data import DataSet, load
from adedge.errors import AdedgeError, ExportError
from adedge.metrics import auroc, quantile_threshold
from adedge.preprocess import InputSpec, prepare_batch
from adedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from adedge.train.checkpoint import load_checkpoint
from adedge.train.methods import load_method

OPSET = 17
INPUT_NAME = "image"
PARITY_IMAGES = 256


@dataclass
class ExportOptions:
    checkpoint: Path
    out: Path
    method: str | None = None
    data: str | None = None  # where held-out normal images come from; default: the training data
    threshold_quantile: float = 0.99
    opset: int = OPSET


@dataclass
class ParityReport:
    images: int
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def rebuild_scorer(checkpoint: dict[str, Any]) -> torch.nn.Module:
    """The method's inference module with the checkpoint's weights, in eval mode."""
    method = load_method(checkpoint["method"])
    config = method.config_from_dict(checkpoint["config"])
    model = method.build(config, len(checkpoint["class_names"]))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return method.inference_module(model).eval()


def trace_to_onnx(scorer: torch.nn.Module, spec: InputSpec, path: Path, opset: int) -> None:
    """Static H/W, dynamic batch; BatchNorm folds into the convolutions (eval mode)."""
    example = torch.zeros(2, spec.channels, spec.height, spec.width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            scorer,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=["score"],
            dynamic_axes={INPUT_NAME: {0: "batch"}, "score": {0: "batch"}},
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


def export_bundle(options: ExportOptions, log=print) -> Path:
    checkpoint = load_checkpoint(options.checkpoint, options.method)
    spec = InputSpec.from_dict(checkpoint["input_spec"])
    scorer = rebuild_scorer(checkpoint)
    dataset = calibration_data(checkpoint, options.data)
    val_batch = prepare_batch(dataset.val.images, spec)
    stage_file = "global.onnx"
    started = time.perf_counter()
    with atomic_directory(options.out) as folder:
        onnx_path = folder / stage_file
        trace_to_onnx(scorer, spec, onnx_path, options.opset)
        stage = StageSpec(
            name="global",
            file=stage_file,
            sha256=sha256_file(onnx_path),
            input_name=INPUT_NAME,
            input=spec,
            outputs=("score",),
        )
        backend = OnnxRuntimeBackend(onnx_path, stage)
        parity_batch = val_batch[:PARITY_IMAGES]
        with torch.no_grad():
            torch_scores = scorer(torch.from_numpy(parity_batch)).numpy()
        parity = parity_check(torch_scores, score_onnx(backend, parity_batch))
        log(
            f"parity: max |Δscore| {parity.max_abs_diff:.2e} over {parity.images} held-out "
            f"images (tolerance {parity.tolerance:.0e})"
        )
        if not parity.passed:
            raise ExportError(
                f"export parity check failed: ONNX and torch scores differ by "
                f"{parity.max_abs_diff:.3g} > {parity.tolerance:.0e}",
                "this is a bug in the method's inference module or the exporter; report it",
            )
        val_scores = score_onnx(backend, val_batch)
        threshold = quantile_threshold(val_scores, options.threshold_quantile)
        metrics = export_metrics(dataset, spec, backend, val_scores, parity, onnx_path)
        card = Card(
            method=checkpoint["method"],
            stages=(stage,),
            threshold=ThresholdSpec(
                value=threshold,
                method=f"quantile {options.threshold_quantile:g}",
                detail=(
                    f"{options.threshold_quantile:.0%} of {len(val_scores)} held-out normal "
                    f"validation images of '{dataset.spec}' score at or below it"
                ),
            ),
            training={
                "checkpoint": str(Path(checkpoint["path"]).resolve()),
                "checkpoint_sha256": sha256_file(checkpoint["path"]),
                "epoch": checkpoint["epoch"],
                "preset": checkpoint.get("preset"),
                "config": checkpoint["config"],
                "data": checkpoint["data"],
                "class_names": checkpoint["class_names"],
                "labels": checkpoint.get("labels"),
            },
            metrics=metrics,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            adedge_version=__version__,
        )
        write_json(folder / CARD_NAME, card.to_dict())
    log(f"exported {checkpoint['method']} to {options.out} in {time.perf_counter() - started:.1f}s")
    return Path(options.out)


def export_metrics(
    dataset: DataSet,
    spec: InputSpec,
    backend: OnnxRuntimeBackend,
    val_scores: np.ndarray,
    parity: ParityReport,
    onnx_path: Path,
) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "parity": {
            "images": parity.images,
            "max_abs_diff": parity.max_abs_diff,
            "tolerance": parity.tolerance,
        },
        "graph_parameters": graph_parameter_count(onnx_path),
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
        test_scores = score_onnx(backend, prepare_batch(test.images, spec))
        metrics["test_auroc"] = auroc(test.labels, test_scores)
        metrics["test_auroc_note"] = "measured at export for information; selected nothing"
    return metrics
