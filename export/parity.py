"""Statistics and acceptance gates of a lower-precision graph against its FP32 graph on the
same real inputs (the FP16 twin and the INT8 graph).

The parity gate (``fp16_failure``; the export runs it on real held-out normal and test
inputs, for the graph as ONNX Runtime's CPU provider runs it and with FP16 activations
emulated). What matters when the FP16 graph replaces the FP32 one is whether decisions and
the order of frames change; rank correlation alone measures that badly, because when many
scores are nearly tied (a barely trained model) a |Δ| far below anything that matters swaps
neighbours and rho drops (0.9989 with max |Δ| 1.9e-5 refused a 1-epoch model). Per output:

1. every FP16 value is finite;
2. the 99th percentile of |Δ| over the inputs (a heatmap: over its pixels) <= 5% of the FP32
   scores' *spread* (10% of a heatmap's), spread = p99 - p1 of the FP32 values (max - min where
   that is 0): 99 frames in 100 can only change their decision if their score lies that close to
   the threshold. A percentile, not the max: one input or pixel in a hundred that rounds badly
   is not a hazard of the graph; the hazards (docs/architecture.md, Precision) move most values
   (and an overflow is rule 1). Measured, p99 (max) |Δ| / spread, CPU and emulated, on the tiny
   test models: Y-GAN (1-2 epochs) 0.1-0.2%, DDR-ID 0.04-0.06%, CBiGAN < 0.001%, IGD global (1
   epoch) score 0.4-0.6% and heatmap 0.5-0.8%, IGD local (1 epoch) score 0.4-0.8% (max 2.8%) and
   heatmap 1.8-3.1% (max 30%): the limits are 3-6x the largest;
3. Spearman rho >= 0.999 (heatmap 0.99) only where the FP32 values are *spread*: spread >=
   n x 2^-10 x max |value| for n values ranked, i.e. the mean gap between neighbouring values
   is at least one FP16 step at their magnitude. Closer than that, FP16 rounding anywhere in
   the network legitimately swaps neighbours that no threshold tells apart, and rho measures
   ties (a heatmap's 10^5 pixels are never that spread: rule 2 is its rule). Measured:
   IGD global's and DDR-ID's scores are spread, Y-GAN's and CBiGAN's are not;
4. where the test split has labels, the FP16 graph's test AUROC through the runtime (tiling,
   reductions, stage sum) is within +-0.005 of FP32's (``MAX_AUROC_DELTA``).

The card's ``metrics.precision.fp16`` records every value, limit and outcome (``FP16_RULE``,
``fp16_verdict``). A failure names the output and the number, and says what to do: export
without the FP16 graph (``--precisions fp32``) or train longer.

INT8 is gated on what it does to detection alone: its test AUROC may not drop by more than
``Int8Options.max_auroc_drop`` (:func:`check_auroc_drop`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adedge.errors import ExportError
from adedge.metrics import average_ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation; 1.0 when both are constant and equal, else 0 for a
    constant side (no order to agree on)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if len(a) != len(b):
        raise ValueError(f"spearman needs equal lengths ({len(a)} != {len(b)})")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    if denominator == 0.0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float((ra * rb).sum() / denominator)


FP16_STEP = 2.0**-10  # spacing of FP16 numbers relative to their magnitude (10 mantissa bits)
DIFF_QUANTILE = 0.99  # the gated |Δ|: its 99th percentile over inputs (a heatmap: pixels)
MAX_SCORE_DIFF = 0.05  # p99 |Δscore| as a fraction of the FP32 scores' spread
MAX_MAP_DIFF = 0.10  # p99 |Δpixel| as a fraction of the FP32 heatmap pixels' spread
MIN_SPEARMAN = 0.999  # the Parity rule, for scores that are spread (``OutputParity.ranked``)
MIN_SPEARMAN_MAP = 0.99  # heatmaps: dense pixels crowd near zero; rho rarely applies to them
MAX_AUROC_DELTA = 0.005  # |ΔAUROC| of the FP16 graph through the runtime, where labels exist
MAX_PARITY_VALUES = 1_000_000  # amap pixels: a strided subset keeps the ranking cheap
AMAP = "amap"

FP16_RULE = {
    "spread": "p99 - p1 of the FP32 values (max - min where that is 0)",
    "score": f"p99 |Δ| <= {MAX_SCORE_DIFF} x spread; Spearman rho >= {MIN_SPEARMAN} where "
    "spread enough",
    AMAP: f"p99 |Δ| over pixels <= {MAX_MAP_DIFF} x spread; Spearman rho >= "
    f"{MIN_SPEARMAN_MAP} where spread enough",
    "finite": "every FP16 value finite",
    "spread_enough_for_rho": "spread >= values x 2^-10 x max |FP32 value|: the mean gap "
    "between neighbouring FP32 values is at least one FP16 step at their magnitude",
    "max_abs_delta_auroc": MAX_AUROC_DELTA,
    "checked_on": "the FP16 graph on ONNX Runtime's CPU provider and with emulated FP16 "
    "activations, each against the FP32 graph on the same real inputs",
}


def max_relative_diff(output: str) -> float:
    return MAX_MAP_DIFF if output == AMAP else MAX_SCORE_DIFF


def required_spearman(output: str) -> float:
    return MIN_SPEARMAN_MAP if output == AMAP else MIN_SPEARMAN


def value_spread(values: np.ndarray) -> float:
    """p99 - p1 of ``values`` (robust to a few outliers); max - min where that is 0 (most
    values tied: a saturated softmax scores many images exactly 0)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0
    low, high = np.quantile(finite, [0.01, 0.99])
    spread = float(high - low)
    return spread if spread > 0 else float(finite.max() - finite.min())


@dataclass(frozen=True)
class OutputParity:
    """One output of a lower-precision graph against the FP32 graph on the same inputs."""

    spearman: float
    max_abs_diff: float  # inf where a value is not finite
    values: int  # ranked (a strided subset beyond ``MAX_PARITY_VALUES``)
    spread: float = 0.0  # of the FP32 values (``value_spread``)
    magnitude: float = 0.0  # max |FP32 value|
    p99_abs_diff: float = 0.0  # 99th percentile of |Δ| (the gated statistic)

    def over_spread(self, diff: float) -> float:
        """``diff`` / spread: 0 where nothing moved, inf where constant values moved."""
        if not np.isfinite(diff):
            return float("inf")
        if self.spread > 0:
            return diff / self.spread
        return 0.0 if diff == 0 else float("inf")

    @property
    def relative_diff(self) -> float:
        """The gated statistic: p99 |Δ| / spread."""
        return self.over_spread(self.p99_abs_diff)

    @property
    def ranked(self) -> bool:
        """Whether the FP32 values are spread enough for rank correlation to mean something:
        the mean gap between neighbours, spread / values, is at least one FP16 step at the
        values' magnitude. Closer than that, FP16 rounding anywhere in the network swaps
        neighbours that no threshold or AUROC tells apart, and rho measures the ties."""
        return self.spread > 0 and self.spread >= self.values * FP16_STEP * self.magnitude

    def to_dict(self) -> dict[str, float | int | bool]:
        return {
            "spearman": self.spearman,
            "max_abs_diff": self.max_abs_diff,
            "p99_abs_diff": self.p99_abs_diff,
            "values": self.values,
            "spread": self.spread,
            "max_abs_fp32_value": self.magnitude,
            "p99_abs_diff_over_spread": self.relative_diff,
            "spread_enough_for_rho": self.ranked,
        }


def compare_output(reference: np.ndarray, candidate: np.ndarray) -> OutputParity:
    """Spearman rho, max and p99 |Δ|, and the reference's spread, over every value (the
    ranking uses a strided subset beyond 1M values)."""
    a = np.asarray(reference, dtype=np.float64).reshape(-1)
    b = np.asarray(candidate, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ExportError(
            f"outputs differ in size ({a.size} vs {b.size})", "this is a bug; report it"
        )
    step = max(1, -(-a.size // MAX_PARITY_VALUES))
    diff = np.abs(a - b)
    finite = bool(diff.size) and bool(np.isfinite(diff).all())
    worst = float(diff.max()) if finite else float("inf")
    high = float(np.quantile(diff, DIFF_QUANTILE)) if finite else float("inf")
    magnitude = float(np.abs(a).max()) if a.size else 0.0
    return OutputParity(
        spearman(a[::step], b[::step]),
        worst,
        int(a[::step].size),
        value_spread(a),
        magnitude,
        high,
    )


def fp16_failure(output: str, parity: OutputParity) -> str | None:
    """Why ``output`` fails the FP16 rule (module docstring, constants above), or None."""
    if not np.isfinite(parity.max_abs_diff):
        return "is not finite in the FP16 graph (an FP16 overflow)"
    limit = max_relative_diff(output)
    if not parity.relative_diff <= limit:
        return (
            f"moves by {parity.p99_abs_diff:.3g} (p99 |Δ|; max {parity.max_abs_diff:.3g}), "
            f"{parity.relative_diff:.2%} of the FP32 values' spread {parity.spread:.3g} "
            f"(p99-p1; limit {limit:.0%})"
        )
    need = required_spearman(output)
    if parity.ranked and not parity.spearman >= need:
        return (
            f"has Spearman rho {parity.spearman:.5f} < {need} although its FP32 values are "
            f"spread (p99-p1 {parity.spread:.3g}; max |Δ| {parity.max_abs_diff:.3g})"
        )
    return None


def fp16_failures(parity: dict[str, OutputParity]) -> dict[str, str]:
    """The outputs that fail the FP16 rule, with the reason."""
    found = {name: fp16_failure(name, p) for name, p in parity.items()}
    return {name: why for name, why in found.items() if why is not None}


def parity_failed(parity: dict[str, OutputParity]) -> bool:
    return bool(fp16_failures(parity))


def worst_output(parity: dict[str, OutputParity]) -> str:
    """A failing output if any (the score first), else the one nearest its limit."""
    failing = fp16_failures(parity)
    if failing:
        return "score" if "score" in failing else next(iter(failing))
    return max(parity, key=lambda name: parity[name].relative_diff / max_relative_diff(name))


def fp16_verdict(output: str, parity: OutputParity) -> dict[str, object]:
    """What the card records for one output of an FP16 check: values, limits, outcome."""
    return {
        **parity.to_dict(),
        "p99_abs_diff_over_spread_limit": max_relative_diff(output),
        "spearman_limit": required_spearman(output) if parity.ranked else None,
        "passed": fp16_failure(output, parity) is None,
    }


MAX_AUROC_DROP = 0.01  # INT8: the test AUROC it may lose against FP32 (Int8Options)


def check_auroc_drop(method: str, fp32_auroc: float, int8_auroc: float, limit: float) -> None:
    """Refuse an INT8 graph that loses more than ``limit`` test AUROC against FP32."""
    drop = fp32_auroc - int8_auroc
    if drop > limit:
        raise ExportError(
            f"the INT8 graph of {method} loses {drop:.5f} test AUROC against FP32 "
            f"({int8_auroc:.4f} vs {fp32_auroc:.4f}; the limit is {limit}): not written",
            "export without INT8 (drop --int8, or int8 from --precisions: the other graphs "
            "are fine), or calibrate on more normal images",
        )


# --- FP32: the exported graph against torch ------------------------------------------------


@dataclass
class ParityReport:
    images: int
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def parity_check(torch_scores: np.ndarray, onnx_scores: np.ndarray) -> ParityReport:
    """FP32 rule (docs/architecture.md, Parity): max |Δscore| <= 1e-4 · max(1, |score|)."""
    diff = np.abs(torch_scores.astype(np.float64) - onnx_scores.astype(np.float64))
    scale = max(1.0, float(np.abs(torch_scores).max()))
    return ParityReport(len(diff), float(diff.max()), 1e-4 * scale)
