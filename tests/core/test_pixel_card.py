"""The card's pixel threshold (``threshold.pixel``): read back as written, every field
checked (type, finiteness, range) with one line naming it, and absent in older cards.
The bundle is the real tile bundle of tests/bundles.py (its stage outputs ``amap``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bundles import write_tile_bundle

from adedge.bundle import CARD_NAME, load_bundle, parse_card
from adedge.errors import BundleError

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed

PIXEL = {"value": 0.3, "percentile": 99.9, "min_area": 20, "frame": [64, 48], "detail": "d"}


@pytest.fixture
def card(tmp_path: Path) -> dict[str, Any]:
    folder = write_tile_bundle(tmp_path / "b", None)
    data = json.loads((folder / CARD_NAME).read_text(encoding="utf-8"))
    data["threshold"]["pixel"] = dict(PIXEL)
    return data


def test_the_pixel_threshold_reads_back_as_written(card):
    pixel = parse_card(card).threshold.pixel
    assert (pixel.value, pixel.percentile, pixel.min_area, pixel.frame, pixel.detail) == (
        0.3,
        99.9,
        20,
        (64, 48),
        "d",
    )
    assert pixel.min_area_for((128, 96)) == 80  # four times the area
    assert parse_card(card).to_dict()["threshold"]["pixel"] == PIXEL
    del card["threshold"]["pixel"]["detail"]
    assert parse_card(card).threshold.pixel.detail == ""


def test_a_card_without_it_or_with_null_has_none(card, tmp_path):
    del card["threshold"]["pixel"]
    assert parse_card(card).threshold.pixel is None
    card["threshold"]["pixel"] = None
    assert parse_card(card).threshold.pixel is None
    folder = write_tile_bundle(tmp_path / "old", None)  # as every older export wrote it
    assert load_bundle(folder).card.threshold.pixel is None


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("value", float("nan"), "must be a finite number"),
        ("value", float("inf"), "must be a finite number"),
        ("value", "0.3", "wrong type"),
        ("value", True, "wrong type"),
        ("percentile", 0, "above 0 and at most 100"),
        ("percentile", 100.5, "above 0 and at most 100"),
        ("percentile", float("nan"), "must be a finite number"),
        ("min_area", 0, "integer from 1"),
        ("min_area", 20.5, "wrong type"),
        ("min_area", False, "wrong type"),
        ("min_area", 1 << 40, "integer from 1"),
        ("frame", [64], "must be .height, width."),
        ("frame", [64, 0], "must be .height, width."),
        ("frame", [64, 48.0], "must be .height, width."),
        ("frame", [64, 100000], "must be .height, width."),
        ("frame", "64x48", "wrong type"),
        ("detail", 3, "wrong type"),
    ],
)
def test_a_bad_field_is_one_line_naming_it(card, key, value, problem):
    card["threshold"]["pixel"][key] = value
    with pytest.raises(BundleError, match=rf"'threshold\.pixel\.{key}'.*{problem}"):
        parse_card(card)


@pytest.mark.parametrize("key", ["value", "percentile", "min_area", "frame"])
def test_a_missing_field_is_refused(card, key):
    del card["threshold"]["pixel"][key]
    with pytest.raises(BundleError, match=rf"'threshold\.pixel\.{key}' is missing"):
        parse_card(card)


def test_pixel_must_be_an_object_and_needs_a_heatmap(card):
    card["threshold"]["pixel"] = 0.3
    with pytest.raises(BundleError, match=r"'threshold\.pixel' has the wrong type"):
        parse_card(card)
    card["threshold"]["pixel"] = dict(PIXEL)
    card["stages"]["local"]["outputs"] = ["score"]
    with pytest.raises(BundleError, match=r"'threshold\.pixel' is set but no stage outputs"):
        parse_card(card)
