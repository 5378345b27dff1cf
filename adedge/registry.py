"""The methods adedge knows, without importing torch: the CLI validates names with this."""

from __future__ import annotations

from dataclasses import dataclass

from adedge.errors import AdedgeError


@dataclass(frozen=True)
class MethodInfo:
    name: str
    title: str
    paper: str
    module: str
    needs_subclasses: bool = False
    paper_ms_per_image: dict[str, float] | None = None


METHODS: dict[str, MethodInfo] = {
    "ygan": MethodInfo(
        name="ygan",
        title="Y-GAN: dual data representations (Ivanovska & Struc)",
        paper="shared/papers/ygan.txt",
        module="adedge.train.methods.ygan",
        needs_subclasses=True,
        paper_ms_per_image={"32x32": 2.6, "256x256": 13.5},
    ),
}


def get_method(name: str) -> MethodInfo:
    key = name.strip().lower().replace("-", "")
    if key not in METHODS:
        raise AdedgeError(
            f"unknown method '{name}'", f"choose one of: {', '.join(sorted(METHODS))}"
        )
    return METHODS[key]
