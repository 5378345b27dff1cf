"""The model bundle: a folder with ``adedge.json`` (the card, :mod:`adedge.card`) and the ONNX
graphs it names; the contract between export and the runtime.

Loading one (:func:`load_bundle`) reads the card strictly (:mod:`adedge.card_reader`),
checks that every file the card names lies inside the folder (links followed) before any
of them is looked at, and that each stage's FP32 graph is present and matches its sha256;
the other graphs are hashed when a backend asks for them (:func:`precision_graph`). The
card's names are importable from here too.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from adedge.card import (  # noqa: F401 - the bundle contract, importable from here
    CARD_NAME,
    DEFAULT_ENGINE_MAX_BATCH,
    DEFAULT_WORKSPACE_MIB,
    FORMAT_VERSION,
    MAX_ENGINE_BATCH,
    MAX_SIDE,
    MAX_TILES_PER_FRAME,
    PADDINGS,
    PRECISIONS,
    REDUCTIONS,
    SHA256_HEX,
    Card,
    EngineSpec,
    GraphFile,
    StageSpec,
    ThresholdSpec,
    TilingSpec,
    check_threshold,
    tile_count,
)
from adedge.card_fields import OUTSIDE, OUTSIDE_HINT, field_error, file_problem
from adedge.card_reader import migrate, parse_card, read_card_json  # noqa: F401
from adedge.errors import BundleError
from adedge.formats import ALWAYS_WRITTEN, Precision


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_file(folder: str | Path, name: str, field_name: str) -> Path:
    """``folder/name`` once it is known to lie inside the folder, links followed.

    Checked before anything looks at the file: an absolute name or one with ``..`` is
    refused from its text alone, a link from where it leads (existing or not), so a card
    naming ``/etc/passwd`` or ``../../x`` gets the same refusal whether or not that file
    exists. ``field_name`` (e.g. ``stages.global.file``) is named in the error.
    """
    where = Path(folder) / CARD_NAME
    problem = file_problem(name)
    if problem is None:
        root = os.path.realpath(folder)
        target = os.path.realpath(os.path.join(root, name))
        if target == root or os.path.commonpath([root, target]) != root:
            problem = OUTSIDE
    if problem is not None:
        raise field_error(where, field_name, problem, OUTSIDE_HINT if problem == OUTSIDE else "")
    return Path(folder) / name


@dataclass(frozen=True)
class Bundle:
    """A bundle folder whose card was read and whose files were found."""

    path: Path
    card: Card

    def stage_file(self, stage: StageSpec) -> Path:
        return bundle_file(self.path, stage.file, f"stages.{stage.name}.graphs.fp32.file")

    def graph_file(self, stage: StageSpec, precision: str = ALWAYS_WRITTEN) -> Path:
        return precision_graph(self.path, stage, precision)


def precision_graph(folder: Path, stage: StageSpec, precision: str) -> Path:
    """The stage's graph in ``precision``: inside the bundle folder, present, and matching
    the card's sha256 (checked in that order; a graph without a sha256 is refused)."""
    if precision not in PRECISIONS:
        raise BundleError(
            f"unknown precision '{precision}'", f"choose one of: {', '.join(PRECISIONS)}"
        )
    graph = stage.graph(precision)
    if graph is None:
        hint = (
            "re-export the bundle with `adedge export --int8`"
            if precision == Precision.INT8
            else "re-export the bundle with `adedge export --precisions fp32,fp16` (the default)"
        )
        raise BundleError(
            f"model bundle '{folder}' has no {precision.upper()} graph for stage '{stage.name}'",
            hint,
        )
    name, digest = graph.file, graph.sha256
    path = bundle_file(folder, name, f"stages.{stage.name}.graphs.{precision}.file")
    if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest):
        raise field_error(
            Path(folder) / CARD_NAME,
            f"stages.{stage.name}.graphs.{precision}.sha256",
            "is not a sha256 (64 lowercase hex digits): every graph is checked against its own",
        )
    if not path.is_file():
        raise BundleError(
            f"model bundle '{folder}' is missing {name} (stage '{stage.name}', {precision})",
            "copy the whole bundle folder or re-export it",
        )
    if sha256_file(path) != digest:
        raise BundleError(
            f"{path} does not match the sha256 in {CARD_NAME}",
            "the file was changed or truncated: copy the bundle again or re-export it",
        )
    return path


def load_bundle(path: str | Path) -> Bundle:
    """Read and validate a bundle; every problem is a BundleError naming the file or field.

    Every file the card names must lie inside the folder (checked before any is looked at);
    each stage's FP32 graph must exist and match its sha256. The FP16/INT8 graphs are
    hashed when a backend asks for them (:func:`precision_graph`).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(
            f"model bundle '{folder}' does not exist or is not a folder",
            "pass the folder written by `adedge export` with --model",
        )
    card_path = folder / CARD_NAME
    if not card_path.is_file():
        raise BundleError(
            f"model bundle '{folder}' has no {CARD_NAME}",
            "re-export it with `adedge export --out` to a fresh folder",
        )
    card = parse_card(read_card_json(card_path), card_path)
    for stage in card.stages:
        for precision, graph in stage.graphs.items():
            bundle_file(folder, graph.file, f"stages.{stage.name}.graphs.{precision}.file")
    for stage in card.stages:
        file = folder / stage.file
        if not file.is_file():
            raise BundleError(
                f"model bundle '{folder}' is missing {stage.file} (stage '{stage.name}')",
                "copy the whole bundle folder or re-export it",
            )
        if sha256_file(file) != stage.sha256:
            raise BundleError(
                f"{file} does not match the sha256 in {CARD_NAME}",
                "the file was changed or truncated: copy the bundle again or re-export it",
            )
    return Bundle(folder, card)
