"""`Method.full_model_forward`: the whole trained model, as the authors' test pass runs it,
gives the same score as the pruned inference module that export traces (the benchmark's
"full model" column times the same computation plus what pruning removes)."""

from __future__ import annotations

import pytest
import torch
from method_harness import MethodHarness

from adedge.train.methods.base import score_of

CASES = [
    ("ygan", {}),
    ("cbigan", {"mode": "object"}),
    ("ddrid", {}),
    ("panda", {}),
    ("igd", {"mode": "global"}),
]


def tiny_model(name: str, extra: dict):
    harness = MethodHarness(name, classes=3, image_size=32, channels=3)
    config, model = harness.tiny(**extra)
    size = harness.method.stage_plan(config).input_size
    return harness.method, model.eval(), torch.rand(4, 3, size, size) * 2 - 1


@pytest.mark.parametrize(("name", "extra"), CASES, ids=[c[0] for c in CASES])
def test_full_model_scores_equal_the_pruned_scorer(name, extra):
    method, model, images = tiny_model(name, extra)
    with torch.inference_mode():
        pruned = score_of(method.inference_module(model)(images))
        full = method.full_model_forward(model, images)
    assert full.shape == (4,)
    torch.testing.assert_close(full, pruned, rtol=1e-5, atol=1e-6)


def test_ddrid_full_model_follows_the_chosen_score():
    method, model, images = tiny_model("ddrid", {})
    model.score_choice.fill_(1)  # AS_r, as Algorithm 2 may choose at export
    with torch.inference_mode():
        pruned = method.inference_module(model)(images)
        full = method.full_model_forward(model, images)
    torch.testing.assert_close(full, pruned, rtol=1e-5, atol=1e-6)


def test_the_full_model_runs_more_than_the_pruned_scorer():
    """Y-GAN's full pass runs E_r and the decoder, which the pruned graph drops."""
    method, model, images = tiny_model("ygan", {})
    calls: list[str] = []
    for name in ("encoder_r", "decoder", "encoder_s"):
        getattr(model, name).register_forward_hook(lambda *_, name=name: calls.append(name))
    with torch.inference_mode():
        method.inference_module(model)(images)
        assert calls == ["encoder_s"]
        calls.clear()
        method.full_model_forward(model, images)
    assert sorted(calls) == ["decoder", "decoder", "encoder_r", "encoder_s"]
