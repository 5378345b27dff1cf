"""What every method's tests share: a tiny model of the method's ``tiny`` preset, a few
training steps on real images, and the checks every inference module must pass. It holds only
the networks it scores with (the rest is pruned before export), a frame's score does not
depend on the frames batched with it (running BatchNorm statistics, as the runtime batches
frames as they come), and its ONNX trace gives torch's numbers.

Each method's own tests (the paper's networks, equations and defaults) stay in its file.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
import torch

from adedge.data import load
from adedge.export.trace import trace_to_onnx
from adedge.preprocess import InputSpec, prepare_batch
from adedge.train.methods import load_method
from adedge.train.methods.base import score_of

OPSET = 17


# --- real images ---------------------------------------------------------------------------


@functools.cache
def _digits(seed: int):
    return load(f"digits:anomaly=0,seed={seed}")


def digits(n: int = 64, size: int = 32, *, offset: int = 0, split: str = "train", seed: int = 0):
    """``n`` real 8x8 digits (no '0': k-classes-out) as the network sees them, grey ``size``
    px, normalised to [-1, 1]."""
    images = getattr(_digits(seed), split).images[offset : offset + n]
    return torch.from_numpy(prepare_batch(images, InputSpec(size, size, "gray")))


def digit_labels(n: int = 64, *, offset: int = 0, split: str = "train", seed: int = 0):
    """The normal sub-class of each of ``digits(n, ...)``."""
    return torch.from_numpy(getattr(_digits(seed), split).labels[offset : offset + n])


# --- a tiny model and its training ---------------------------------------------------------


class MethodHarness:
    """One method's tiny models: ``classes`` is what ``build`` gets (the normal sub-classes),
    ``defaults`` the config every tiny model starts from (a test's overrides win)."""

    def __init__(self, name: str, classes: int = 1, **defaults: Any) -> None:
        self.method = load_method(name)
        self.classes = classes
        self.defaults = defaults

    def tiny(self, **overrides: Any):
        """(config, model) of the ``tiny`` preset, the same weights every time (seed 0)."""
        torch.manual_seed(0)
        config = self.method.make_config("tiny", **{**self.defaults, **overrides})
        return config, self.method.build(config, self.classes)

    def train(
        self,
        model: torch.nn.Module,
        config: Any,
        batches: Sequence[torch.Tensor],
        *,
        labels: torch.Tensor | None = None,
        progress: float | None = None,
        optimizers: dict | None = None,
    ) -> list[dict[str, float]]:
        """One ``train_step`` per batch, in training mode; each step's record. ``progress``
        (the fraction of training done) rises as i / len(batches) unless one value is given;
        the method's own optimisers unless ``optimizers`` carries them on."""
        optimizers = (
            optimizers if optimizers is not None else self.method.make_optimizers(model, config)
        )
        model.train()
        return [
            self.method.train_step(
                model,
                optimizers,
                images,
                labels,
                i / len(batches) if progress is None else progress,
                config,
            )
            for i, images in enumerate(batches)
        ]


# --- the checks every inference module passes ----------------------------------------------


def assert_finite(history: Iterable[dict[str, float]]) -> None:
    """Every loss of every step is a number (no NaN, no infinity)."""
    for record in history:
        assert all(np.isfinite(v) for v in record.values()), record


def assert_holds_only(
    scorer: torch.nn.Module,
    kept: Iterable[torch.nn.Module] | None,
    pruned: Iterable[torch.nn.Module] = (),
) -> None:
    """The scorer's parameters are exactly those of ``kept`` (unless None) and none of
    ``pruned``'s: what export traces is the inference subgraph, no more."""
    ids = {id(p) for p in scorer.parameters()}
    if kept is not None:
        assert ids == {id(p) for net in kept for p in net.parameters()}
    for net in pruned:
        assert ids.isdisjoint(id(p) for p in net.parameters()), type(net).__name__


def assert_batch_independent(
    scorer: torch.nn.Module,
    images: torch.Tensor,
    count: int | None = None,
    *,
    atol: float,
    rtol: float = 1e-5,
) -> None:
    """The first ``count`` images (all by default) score alone as they do in the batch."""
    count = len(images) if count is None else count
    with torch.no_grad():
        batch = score_of(scorer(images))[:count]
        singles = torch.cat([score_of(scorer(images[i : i + 1])) for i in range(count)])
    assert torch.allclose(singles, batch, atol=atol, rtol=rtol)


def assert_scores_close(actual: np.ndarray, expected: np.ndarray, relative: float = 1e-4) -> None:
    """Within ``relative`` of the scores' scale (at least 1): ONNX Runtime against torch."""
    tolerance = relative * max(1.0, float(np.abs(expected).max()))
    assert np.abs(actual - expected).max() <= tolerance


class Parity(NamedTuple):
    graph: onnx.GraphProto  # the traced graph, to check what was pruned
    score: np.ndarray  # ONNX Runtime's outputs for the last batch
    amap: np.ndarray


def assert_onnx_parity(
    scorer: torch.nn.Module,
    spec: InputSpec,
    path: Path,
    batches: Iterable[torch.Tensor],
    *,
    amap_atol: float,
    amap_relative: bool = False,
) -> Parity:
    """Trace ``scorer`` as export does and run each batch through ONNX Runtime: "score" and
    "amap" of torch's shapes, the score within 1e-4 of its scale, the map within
    ``amap_atol`` (times the map's scale, at least 1, if ``amap_relative``)."""
    trace_to_onnx(scorer, spec, path, OPSET)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["score", "amap"]
    for batch in batches:
        with torch.no_grad():
            torch_score, torch_amap = scorer(batch)
        onnx_score, onnx_amap = session.run(["score", "amap"], {"image": batch.numpy()})
        assert onnx_score.shape == (len(batch),) and onnx_amap.shape == tuple(torch_amap.shape)
        assert_scores_close(onnx_score, torch_score.numpy())
        scale = max(1.0, float(torch_amap.abs().max())) if amap_relative else 1.0
        assert np.abs(onnx_amap - torch_amap.numpy()).max() <= amap_atol * scale
    return Parity(onnx.load(str(path)).graph, onnx_score, onnx_amap)
