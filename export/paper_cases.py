"""The papers' benchmark cases, built: every method at the papers' input sizes with its paper
preset (random weights: speed does not depend on them), its pruned scorer traced to FP32,
FP16 and INT8 graphs with a card, and the torch calls of the whole trained model (as the
authors' test pass runs it) and of the pruned scorer. :mod:`adedge.runtime.bench.papers`
measures them."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from adedge.bundle import CARD_NAME, Card, GraphFile, StageSpec, ThresholdSpec, sha256_file
from adedge.export.fp16 import convert_to_mixed_fp16
from adedge.export.int8 import quantize_int8
from adedge.export.trace import INPUT_NAME, stage_spec, trace_to_onnx
from adedge.preprocess import InputSpec
from adedge.runtime.bench.flops import count_flops, traffic_bytes
from adedge.runtime.bench.fusion import Fusion
from adedge.runtime.bench.papers import FULL, PRUNED, BenchStage, Case, StageCase
from adedge.train.methods import load_method
from adedge.train.methods.base import CommonConfig, Method, score_of
from adedge.train.views import tiles_per_image


def eager(forward: Callable[[torch.Tensor], Any]) -> Callable[[np.ndarray], Callable[[], Any]]:
    """A batch -> a no-argument call of ``forward`` on it, in inference mode."""

    def on(batch: np.ndarray) -> Callable[[], Any]:
        tensor = torch.from_numpy(batch)

        def call() -> Any:
            with torch.inference_mode():
                return forward(tensor)

        return call

    return on


def paper_config(method: Method, stage: StageCase) -> CommonConfig:
    """The paper preset at the stage's input size, channels and mode (if it names one)."""
    mode = {} if stage.mode is None else {"mode": stage.mode}
    return method.make_config("paper", image_size=stage.image_size, channels=stage.channels, **mode)


def build_stage(method_name: str, case: StageCase, bundle: Path) -> BenchStage:
    """Paper-preset model (random weights), traced to FP32, FP16 and INT8 graphs in ``bundle``."""
    method = load_method(method_name)
    torch.manual_seed(0)
    config = paper_config(method, case)
    model = method.build(config, 9).eval()
    plan = method.stage_plan(config)
    scorer = method.inference_module(model).eval()
    norm = ((0.5,) * case.channels, (0.5,) * case.channels)
    spec = InputSpec(
        plan.input_size, plan.input_size, "gray" if case.channels == 1 else "rgb", *norm
    )
    path = bundle / f"{method_name}-{plan.name}-{case.image_size}.onnx"
    trace_to_onnx(scorer, spec, path, 17)
    full = partial(method.full_model_forward, model)
    stage, fusion = with_precision_twins(stage_spec(plan, spec, path, outputs_of(path)), path)
    moved = {"fp32": traffic_bytes(path, spec)}
    if stage.graph("int8") is not None:
        moved["int8"] = traffic_bytes(bundle / stage.graph("int8").file, spec)
    return BenchStage(
        plan.name,
        stage,
        bundle,
        tiles_per_image(plan.frame_size, plan),
        count_flops(path, spec),
        count_torch_flops(full, spec),
        type(method).full_model_forward is Method.full_model_forward,
        eager={FULL: eager(full), PRUNED: eager(lambda x: score_of(scorer(x)))},
        bytes_per_input=moved,
        fusion=None if fusion is None else fusion.to_dict(),
    )


def with_precision_twins(stage: StageSpec, path: Path) -> tuple[StageSpec, Fusion | None]:
    """Write the FP16 twin and the INT8 (QDQ) graph beside ``path``: the card entry naming
    them, and how many of the INT8 graph's convolutions ONNX Runtime fuses (None: no INT8
    graph). INT8 calibrates on uniform noise in the normalised range: speed, not accuracy,
    is timed."""
    fp16 = path.with_suffix(".fp16.onnx")
    onnx.save(convert_to_mixed_fp16(onnx.load(str(path)))[0], str(fp16))
    stage = stage.with_graph("fp16", GraphFile(fp16.name, sha256_file(fp16)))
    int8 = path.with_suffix(".int8.onnx")
    spec = stage.input
    shape = (32, spec.channels, spec.height, spec.width)
    calibration = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
    try:
        report = quantize_int8(path, int8, INPUT_NAME, calibration)
    except Exception as exc:  # report, keep going: the other backends still measure
        print(f"  int8 skipped for {path.name}: {type(exc).__name__}: {exc}")
        return stage, None
    return stage.with_graph("int8", GraphFile(int8.name, sha256_file(int8))), report.fusion


def write_card(stages: list[BenchStage], bundle: Path) -> None:
    """A card for the stages' graphs, so the runtime's Detector and backends can load them."""
    card = Card("bench", tuple(s.spec for s in stages), ThresholdSpec(0.0, "benchmark"))
    (bundle / CARD_NAME).write_text(json.dumps(card.to_dict()), encoding="utf-8")


def build_case(case: Case, folder: Path) -> list[BenchStage]:
    """Every stage of ``case`` built into ``folder``, with the card that names them."""
    stages = [build_stage(case.method, stage, folder) for stage in case.stages]
    write_card(stages, folder)
    return stages


def use_threads(threads: int) -> str:
    """torch on ``threads`` threads, as every other engine; torch's version for the report."""
    torch.set_num_threads(threads)
    return torch.__version__


def count_torch_flops(forward: Callable[[torch.Tensor], Any], spec: InputSpec) -> int:
    """FLOPs of one input through ``forward`` in eager mode (torch counts 2 x MACs of convs and
    matmuls, as ``count_flops`` does): results that nothing uses count too, as they run."""
    from torch.utils.flop_counter import FlopCounterMode

    image = torch.zeros(1, spec.channels, spec.height, spec.width)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        forward(image)
    return int(counter.get_total_flops())


def inputs_per_frame(case: Case) -> int:
    """Network inputs one frame of ``case`` needs (its tiles, over all stages), unbuilt."""
    method = load_method(case.method)
    total = 0
    for stage in case.stages:
        plan = method.stage_plan(paper_config(method, stage))
        total += tiles_per_image(plan.frame_size, plan)
    return total


def outputs_of(path: Path) -> tuple[str, ...]:
    """The output names of the ONNX graph ``path``."""
    return tuple(output.name for output in onnx.load(str(path)).graph.output)
