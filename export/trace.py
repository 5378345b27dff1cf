"""From a checkpoint to an ONNX graph: rebuild the trained model, take the method's inference
module (the pruned subgraph that computes ``score``, and ``amap`` where the method
localises), and trace it (opset 17, static H/W, dynamic batch, BatchNorm folded).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from adedge.bundle import GraphFile, StageSpec, TilingSpec, sha256_file
from adedge.errors import CheckpointError
from adedge.export.cpu_layout import wants_nchwc
from adedge.preprocess import InputSpec, prepare_batch
from adedge.runtime.detector import AMAP
from adedge.train.checkpoint import Checkpoint, load_weights
from adedge.train.methods import load_method
from adedge.train.methods.base import CommonConfig, Method, StagePlan
from adedge.train.views import grid_tiles

OPSET = 17
PARITY_IMAGES = 256  # held-out inputs the parity checks run on


INPUT_NAME = "image"


def rebuild_model(checkpoint: Checkpoint) -> tuple[Method, CommonConfig, torch.nn.Module]:
    """The method, its config and the full training model with the checkpoint's weights."""
    method = load_method(checkpoint.method)
    config = method.config_from_dict(checkpoint.config)
    try:
        model = method.build(config, len(checkpoint.class_names))
    except ValueError as exc:
        raise CheckpointError(
            f"checkpoint '{checkpoint.path}' holds a config {method.name} cannot build: {exc}",
            "use a checkpoint written by `adedge train`",
        ) from None
    load_weights(model, checkpoint)  # weights that do not fit are one line, not a traceback
    return method, config, model.eval()


def rebuild_scorer(checkpoint: Checkpoint) -> torch.nn.Module:
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


def calibration_inputs(images: list[np.ndarray], checkpoint: Checkpoint) -> torch.Tensor:
    """Held-out normal images as the stage's network sees them (grid tiles if tiled)."""
    batch = torch.from_numpy(prepare_batch(images, checkpoint.frame_spec))
    return grid_tiles(batch, checkpoint.stage_plan)


def spread(rows: torch.Tensor, limit: int) -> torch.Tensor:
    """At most ``limit`` rows, evenly spaced (tiles of every image, not the first ones)."""
    if len(rows) <= limit:
        return rows
    return rows[np.linspace(0, len(rows) - 1, limit).round().astype(int)]


def stage_spec(plan: StagePlan, spec: InputSpec, path: Path, outputs: tuple[str, ...]) -> StageSpec:
    """The card entry of the traced FP32 graph ``path`` of a stage planned by ``plan``: its
    file and sha256, input, outputs, the plan's tiling, reduction and weight, and whether
    ONNX Runtime's blocked layout pays for the graph (``cpu_layout.wants_nchwc``)."""
    tiling = None
    if plan.tiled:
        size = (plan.frame_size, plan.frame_size)
        tiling = TilingSpec(size, plan.tile, plan.stride or plan.tile, plan.padding)
    return StageSpec(
        name=plan.name,
        graphs={"fp32": GraphFile(path.name, sha256_file(path))},
        input_name=INPUT_NAME,
        input=spec,
        outputs=tuple(outputs),
        tiling=tiling,
        reduce=plan.reduce,
        weight=plan.weight,
        nchwc=wants_nchwc(onnx.load(str(path))),
    )
