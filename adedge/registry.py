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
    "cbigan": MethodInfo(
        name="cbigan",
        title="CBiGAN: consistency-regularised BiGAN (Carrara et al.)",
        paper="shared/papers/cbigan.txt",
        module="adedge.train.methods.cbigan",
    ),
    "ddrid": MethodInfo(
        name="ddrid",
        title="DDR-ID: dual deep reconstruction networks with image decomposition (Lin et al.)",
        paper="shared/papers/ddrid.txt",
        module="adedge.train.methods.ddrid",
    ),
    "panda": MethodInfo(
        name="panda",
        title="PANDA(-GAN): perceptually aware neural detection of anomalies (Barker & Breckon)",
        paper="shared/papers/panda.txt",
        module="adedge.train.methods.panda",
        paper_ms_per_image={"Plant Village PWL (Titan X)": 15.2},
    ),
    "igd": MethodInfo(
        name="igd",
        title="IGD: interpolated Gaussian descriptor (Chen et al.)",
        paper="shared/papers/igd.txt",
        module="adedge.train.methods.igd",
    ),
}


def get_method(name: str) -> MethodInfo:
    key = name.strip().lower().replace("-", "")
    if key not in METHODS:
        raise AdedgeError(
            f"unknown method '{name}'", f"choose one of: {', '.join(sorted(METHODS))}"
        )
    return METHODS[key]
