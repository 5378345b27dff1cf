"""The measuring parts of `adedge bench --papers`: FLOP counts and the cases' geometry."""

from __future__ import annotations

import torch
from torch import nn

from adedge.export.paper_cases import count_torch_flops, inputs_per_frame
from adedge.export.trace import trace_to_onnx
from adedge.preprocess import InputSpec
from adedge.runtime.bench.flops import count_flops
from adedge.runtime.bench.papers import CASES


class ConvResizeConv(nn.Module):
    """A shape that ONNX shape inference loses: a conv after a bilinear Resize."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.second = nn.Conv2d(4, 2, 1)
        self.head = nn.Linear(2 * 16 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.second(self.up(self.first(x))).flatten(1)).mean(dim=1)


def test_flops_count_every_conv_and_matmul_after_a_resize(tmp_path):
    spec = InputSpec(8, 8, "rgb", (0.5,) * 3, (0.5,) * 3)
    module = ConvResizeConv().eval()
    path = tmp_path / "m.onnx"
    trace_to_onnx(module, spec, path, 17)
    macs = 8 * 8 * 4 * (3 * 3 * 3) + 16 * 16 * 2 * 4 + 5 * (2 * 16 * 16)
    assert count_flops(path, spec) == 2 * macs
    assert count_torch_flops(module, spec) == 2 * macs


def test_cases_cover_the_papers_geometries():
    rows = {case.name: inputs_per_frame(case) for case in CASES}
    assert rows["igd 256x256 rgb global + 225 local patches"] == 1 + 225
    assert rows["cbigan 512x512 rgb texture (64 tiles)"] == 64
    assert rows["ygan 32x32 grey"] == rows["ddrid 32x32 grey"] == 1
