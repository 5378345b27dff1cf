"""`adedge threshold`: choose a bundle's threshold by a rule on data, and rewrite its card.

Export sets the threshold from held-out normal images alone (a percentile: it fixes the
false-alarm rate). A user with a labelled validation set can do better for their own
trade-off: the F1-optimal threshold (anomalib's adaptive threshold) or the lowest
false-alarm rate that catches a target share of anomalies. The data is scored by the
runtime's own Detector, so the threshold is the one the stream will compare against
(anomalous: ``score > threshold``). Only the card's ``threshold`` changes; the rest is
written as the card writer (:meth:`adedge.card.Card.to_dict`) writes it, atomically. The
bundle loader checks the graphs' sha256, not the card's, so the bundle still loads; a
Triton repository holds its own copy of the card and is not touched.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer

from adedge.cli.app import DATA_HELP, Command, app, pick_model, say
from adedge.errors import AdedgeError

RULE_HELP = (
    "f1 (the F1-optimal threshold on labelled data), tpr=T (the lowest false-alarm rate "
    "that flags at least T of the anomalies, T in (0, 1]; labelled data), or normal=Q (Q "
    "of the held-out normal images score at or below it, as export does)."
)


@dataclass(frozen=True)
class Rule:
    """How the threshold is chosen: ``kind`` f1 | tpr | normal, ``value`` its number."""

    kind: str
    value: float | None = None

    @property
    def needs_labels(self) -> bool:
        return self.kind != "normal"

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}={self.value:g}"

    @property
    def card_method(self) -> str:
        """The card's ``threshold.method``; normal=Q reads as export writes it."""
        if self.kind == "normal":
            return f"quantile {self.value:g}"
        return "f1" if self.kind == "f1" else f"tpr {self.value:g}"


def parse_rule(text: str) -> Rule:
    """``--rule``: f1, tpr=T or normal=Q, with T and Q in (0, 1]."""
    name, _, number = text.strip().partition("=")
    name = name.strip().lower()
    if name == "f1" and not number:
        return Rule("f1")
    if name in ("tpr", "normal") and number:
        try:
            value = float(number)
        except ValueError:
            value = float("nan")
        if not 0.0 < value <= 1.0:
            what = "target TPR" if name == "tpr" else "normal quantile"
            raise AdedgeError(
                f"--rule {text}: the {what} must lie in (0, 1]",
                f"e.g. --rule {name}=0.95",
            )
        return Rule(name, value)
    raise AdedgeError(
        f"--rule '{text}' is not a rule", "use f1, tpr=T (e.g. tpr=0.95) or normal=Q (normal=0.99)"
    )


def check_bundle_writable(folder: Path) -> None:
    """The card is replaced by a rename inside the bundle folder: the folder must take a new
    file (tried for real, so a read-only mount or an immutable folder is caught as root)."""
    problem = not os.access(folder, os.W_OK | os.X_OK)
    if not problem:
        try:
            with tempfile.TemporaryFile(dir=folder, prefix=".adedge-threshold-"):
                pass
        except OSError:
            problem = True
    if problem:
        raise AdedgeError(
            f"cannot rewrite the card of '{folder}': the bundle folder is not writable",
            "copy the bundle to a writable folder, or pass --dry-run to see the threshold only",
        )


@app.command("threshold", cls=Command)
def threshold(
    data: Annotated[str, typer.Option(help=DATA_HELP)],
    rule: Annotated[str, typer.Option(help=RULE_HELP)],
    model: Annotated[
        Path | None, typer.Option(help="Bundle folder (default: the newest in models/).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the threshold; leave the card as it is.")
    ] = False,
    threads: Annotated[
        int, typer.Option(help="CPU threads for ONNX Runtime per stage; 0: every core.")
    ] = 0,
) -> None:
    """Choose the threshold by RULE on DATA (scored by the bundle, as the stream scores),
    print the operating point it gives, and rewrite the card's threshold. The operating point
    is the image score's: a pixel threshold in the card is kept as it is."""
    from adedge.atomic import write_json
    from adedge.bundle import CARD_NAME
    from adedge.data import load
    from adedge.runtime.detector import Detector
    from adedge.runtime.evaluate import score_split
    from adedge.runtime.operating_points import (
        curve,
        f1_optimal,
        normal_percentile,
        point_at,
        target_tpr,
    )
    from adedge.runtime.stream.wiring import check_threads

    chosen = parse_rule(rule)
    check_threads(threads)
    folder = pick_model(model)
    if not dry_run:
        check_bundle_writable(folder)  # before the work
    card_path = folder / CARD_NAME
    detector = Detector(folder, threads=threads)
    try:
        detector.card.warn_if_unknown_method(say)
        before = card_path.read_bytes()
        dataset = load(data)
        test = dataset.test
        labelled = test is not None and 0 < int(test.labels.sum()) < len(test)
        if chosen.needs_labels and not labelled:
            raise AdedgeError(
                f"--rule {chosen} needs labelled data with normal and anomalous images, and "
                f"'{dataset.spec}' has none",
                "pass a folder with test/good and test/<defect> (or digits:anomaly=N), "
                "or use --rule normal=0.99",
            )
        old = detector.card.threshold
        if chosen.needs_labels:
            say(f"scoring {len(test)} labelled test images of '{dataset.spec}'")
            scores = score_split(detector, test.images)
            labels = test.labels
            roc = curve(labels, scores)
            point = f1_optimal(roc) if chosen.kind == "f1" else target_tpr(roc, chosen.value)
            value = point.threshold
            counts = f"{len(test)} images, {int(labels.sum())} anomalous"
            goal = (
                "F1-optimal" if chosen.kind == "f1" else f"lowest FPR with TPR >= {chosen.value:g}"
            )
            detail = (
                f"{goal} on the labelled test split of '{dataset.spec}' ({counts}): TPR "
                f"{point.tpr:.4f}, FPR {point.fpr:.4f}, F1 {point.f1:.4f}"
            )
            for name, at in (("old", point_at(labels, scores, old.value)), ("new", point)):
                precision = "-" if at.tp + at.fp == 0 else f"{at.precision:.4f}"
                typer.echo(
                    f"{name}: threshold {at.threshold:.6g}  TPR {at.tpr:.4f}  FPR {at.fpr:.4f}  "
                    f"precision {precision}  F1 {at.f1:.4f}  ({counts})"
                )
        else:
            normal = dataset.val
            if len(normal) == 0:
                raise AdedgeError(
                    f"'{dataset.spec}' has no held-out normal images", "pass a larger data set"
                )
            say(f"scoring {len(normal)} held-out normal images of '{dataset.spec}'")
            scores = score_split(detector, normal.images)
            value = normal_percentile(scores, chosen.value)
            detail = (
                f"{chosen.value:.0%} of {len(scores)} held-out normal validation images of "
                f"'{dataset.spec}' score at or below it"
            )
            for name, at in (("old", old.value), ("new", value)):
                above = int((scores > at).sum())
                typer.echo(
                    f"{name}: threshold {at:.6g}  FPR {above / len(scores):.4f} "
                    f"({above} of {len(scores)} held-out normal images above it)"
                )
    finally:
        detector.close()
    if dry_run:
        typer.echo(f"dry run: the card of '{folder}' keeps threshold {old.value:.6g}")
        return
    if card_path.read_bytes() != before:
        raise AdedgeError(
            f"the card of '{folder}' changed while its data was scored",
            "run adedge threshold again",
        )
    # replace() keeps every other field of the threshold (the pixel threshold where there is one)
    spec = replace(old, value=float(value), method=chosen.card_method, detail=detail)
    write_json(card_path, replace(detector.card, threshold=spec).to_dict())
    typer.echo(
        f"wrote threshold {value:.6g} ({chosen.card_method}) to {card_path} "
        f"(was {old.value:.6g}, {old.method})"
    )
