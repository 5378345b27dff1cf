"""Upgrades of older card versions, one step per version (see :func:`adedge.card_reader.migrate`).

``MIGRATIONS[v]`` takes a version-``v`` card dict to version ``v + 1``, checking the fields it
reads with the same one-line errors as the reader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adedge.card import PRECISIONS
from adedge.card_fields import FieldReader
from adedge.formats import ALWAYS_WRITTEN


def _v1_graphs(reader: FieldReader, name: str, stage: dict[str, Any]) -> dict[str, Any]:
    """A version-1 stage's flat graph fields as a version-2 ``graphs`` map."""
    path = f"stages.{name}"
    flat = {
        p: ("file", "sha256") if p == ALWAYS_WRITTEN else (f"{p}_file", f"{p}_sha256")
        for p in PRECISIONS
    }
    graphs = {}
    for precision, (file_key, sha_key) in flat.items():
        if stage.get(file_key) is None:
            if stage.get(sha_key) is not None:
                raise reader.fail(f"{path}.{sha_key}", f"is set but {file_key} is not")
            if precision == ALWAYS_WRITTEN:
                raise reader.fail(f"{path}.file", "is missing")
            continue
        graphs[precision] = {"file": stage[file_key], "sha256": stage.get(sha_key)}
        if stage.get(sha_key) is None:
            raise reader.fail(
                f"{path}.{sha_key}", "is missing: every graph the card names needs its sha256"
            )
    return graphs


def _v1_to_v2(data: dict[str, Any], reader: FieldReader) -> dict[str, Any]:
    """Version 1 -> 2: each stage's graphs in one map; ``combine`` folded into the stage
    weights (the frame score is their weighted sum: ``mean`` divides them by the number of
    stages); ``score_normalisation`` and ``normalisation_in_graph``, which no exporter wrote,
    refused when set."""
    data = dict(data)
    stages = reader.get(data, "stages", dict, "stages")
    combine = reader.word(data, "combine", ("sum", "mean"), "combine", default="sum")
    if data.get("score_normalisation") is not None:
        raise reader.fail(
            "score_normalisation",
            "is set: no exporter wrote it and this adedge no longer applies it",
            "re-export the bundle with this adedge",
        )
    upgraded = {}
    for name, stage in stages.items():
        stage = dict(reader.get(stages, name, dict, f"stages.{name}"))
        if stage.pop("normalisation_in_graph", False):
            raise reader.fail(
                f"stages.{name}.normalisation_in_graph",
                "is true, but this adedge always normalises with the card's mean/std before "
                "the graph (it would normalise twice)",
                "re-export the bundle with this adedge",
            )
        stage["graphs"] = _v1_graphs(reader, name, stage)
        for key in ("file", "sha256", "fp16_file", "fp16_sha256", "int8_file", "int8_sha256"):
            stage.pop(key, None)
        if combine == "mean":
            weight = reader.number(stage, "weight", f"stages.{name}.weight", default=1.0)
            stage["weight"] = weight / len(stages)
        upgraded[name] = stage
    data["stages"] = upgraded
    data.pop("combine", None)
    data.pop("score_normalisation", None)
    return data


# from-version -> the function that upgrades a card dict of that version by one version
MIGRATIONS: dict[int, Callable[[dict[str, Any], FieldReader], dict[str, Any]]] = {1: _v1_to_v2}
