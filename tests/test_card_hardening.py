"""A bad card is one line naming the field and the fix, never a traceback (DESIGN §4, §7).

Issue 16 (hardening): files a card names stay inside the bundle folder, every graph is
hashed, every field the reader accepts is type- and range-checked (NaN and infinities
included), older card versions go through one ``migrate`` step, and a card of an unknown
method still streams with a one-line warning. The bundles are the tiny real ONNX mean
bundle of conftest (no torch).
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adedge import bundle as bundle_module
from adedge.bundle import (
    CARD_NAME,
    FORMAT_VERSION,
    MAX_CARD_BYTES,
    MAX_SIDE,
    MAX_TILES_PER_FRAME,
    Card,
    StageSpec,
    TilingSpec,
    check_threshold,
    load_bundle,
    migrate,
    parse_card,
    precision_graph,
    sha256_file,
    tile_count,
)
from adedge.errors import AdedgeError, BundleError
from adedge.runtime.detector import Detector
from adedge.runtime.tiling import plan_tiles

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed

NAN, INF = float("nan"), float("inf")


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def bundle_dir(tmp_path: Path, mean_bundle: Path) -> Path:
    """A fresh copy of the mean bundle at tmp/outer/bundle (tmp/outer: 'outside' it)."""
    folder = tmp_path / "outer" / "bundle"
    shutil.copytree(mean_bundle, folder)
    return folder


def read_card(folder: Path) -> dict[str, Any]:
    return json.loads((folder / CARD_NAME).read_text(encoding="utf-8"))


def write_card(folder: Path, card: dict[str, Any] | str) -> None:
    text = card if isinstance(card, str) else json.dumps(card)  # NaN/Infinity literals kept
    (folder / CARD_NAME).write_text(text, encoding="utf-8")


def refusal(folder: Path, *words: str) -> str:
    """load_bundle's one-line BundleError, checked to name every word."""
    with pytest.raises(BundleError) as caught:
        load_bundle(folder)
    line = caught.value.one_line()
    assert "\n" not in line and line.endswith(".")
    assert caught.value.hint, line
    for word in words:
        assert word in line, (word, line)
    return line


def stage(card: dict[str, Any]) -> dict[str, Any]:
    return card["stages"]["global"]


def outside_copy(folder: Path) -> Path:
    """A valid copy of the bundle's graph just outside the folder."""
    target = folder.parent / "x.onnx"
    shutil.copy(folder / "global.onnx", target)
    return target


# --- 1. files stay inside the bundle -----------------------------------------------------------


@pytest.mark.parametrize("field", ["file", "fp16_file", "int8_file"])
@pytest.mark.parametrize("name", ["../x.onnx", "sub/../../x.onnx", "ABSOLUTE"])
def test_card_files_must_stay_inside_the_bundle(bundle_dir, field, name):
    target = outside_copy(bundle_dir)  # exists, with the right sha256: loaded before the fix
    card = read_card(bundle_dir)
    stage(card)[field] = str(target) if name == "ABSOLUTE" else name
    stage(card)[field.replace("file", "sha256")] = sha256_file(target)
    write_card(bundle_dir, card)
    refusal(bundle_dir, f"stages.global.{field}", "outside the bundle folder")


def test_a_symlink_leading_out_of_the_bundle_is_refused(bundle_dir):
    (bundle_dir / "link.onnx").symlink_to(outside_copy(bundle_dir))
    card = read_card(bundle_dir)
    stage(card)["file"] = "link.onnx"
    write_card(bundle_dir, card)
    refusal(bundle_dir, "stages.global.file", "outside the bundle folder")


def test_a_symlinked_folder_leading_out_is_refused(bundle_dir):
    outside_copy(bundle_dir)
    (bundle_dir / "graphs").symlink_to(bundle_dir.parent)
    card = read_card(bundle_dir)
    stage(card)["fp16_file"] = "graphs/x.onnx"
    stage(card)["fp16_sha256"] = stage(card)["sha256"]
    write_card(bundle_dir, card)
    refusal(bundle_dir, "stages.global.fp16_file", "outside the bundle folder")


def test_a_symlink_staying_inside_the_bundle_is_fine(bundle_dir):
    (bundle_dir / "graphs").mkdir()
    shutil.move(bundle_dir / "global.onnx", bundle_dir / "graphs" / "global.onnx")
    (bundle_dir / "global.onnx").symlink_to(Path("graphs") / "global.onnx")
    assert load_bundle(bundle_dir).card.stages[0].file == "global.onnx"


@pytest.mark.parametrize(
    "present, absent",
    [
        ("/etc/passwd", "/etc/adedge-no-such-file"),
        ("../../../../../../../../etc/passwd", "../../../../../../../../etc/adedge-no-such"),
    ],
)
def test_refusal_does_not_reveal_whether_an_outside_file_exists(bundle_dir, present, absent):
    assert Path("/etc/passwd").is_file()
    lines = []
    for name in (present, absent):
        card = read_card(bundle_dir)
        stage(card)["file"] = name
        write_card(bundle_dir, card)
        lines.append(refusal(bundle_dir, "stages.global.file", "outside the bundle folder"))
    assert lines[0] == lines[1]


def test_a_link_to_an_existing_or_missing_outside_file_reads_the_same(bundle_dir):
    lines = []
    for target in (outside_copy(bundle_dir), bundle_dir.parent / "missing.onnx"):
        link = bundle_dir / "link.onnx"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        card = read_card(bundle_dir)
        stage(card)["file"] = "link.onnx"
        write_card(bundle_dir, card)
        lines.append(refusal(bundle_dir, "stages.global.file"))
    assert lines[0] == lines[1]


def test_precision_graph_checks_containment_for_hand_built_stages(bundle_dir):
    """Backends reach the FP16/INT8 graphs through precision_graph, which checks again."""
    spec = load_bundle(bundle_dir).card.stages[0]
    lines = []
    for name in ("../x.onnx", "../missing.onnx"):
        outside = StageSpec(**{**spec.__dict__, "fp16_file": name, "fp16_sha256": spec.sha256})
        with pytest.raises(BundleError) as caught:
            precision_graph(bundle_dir, outside, "fp16")
        lines.append(caught.value.one_line())
        outside_copy(bundle_dir)  # the second name's sibling now exists; the first did not
    assert "stages.global.fp16_file" in lines[0] and "outside the bundle folder" in lines[0]
    assert lines[0].replace("../x.onnx", "N") == lines[1].replace("../missing.onnx", "N")


@pytest.mark.parametrize("name", ["../../evil", "a/b", "", ".hidden", "x" * 65])
def test_stage_names_are_plain_words(bundle_dir, name):
    """The stage name becomes the engine's file name (engines/<stage>.sm...engine)."""
    card = read_card(bundle_dir)
    card["stages"] = {name: stage(card)}
    write_card(bundle_dir, card)
    refusal(bundle_dir, "stages", "letters, digits")


# --- 2. every graph is hashed ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["", None, "MISSING", "0" * 63, "A" * 64, "g" * 64, 5, "ab" * 32 + " "]
)
def test_the_fp32_sha256_must_be_64_lowercase_hex(bundle_dir, value):
    card = read_card(bundle_dir)
    if value == "MISSING":
        del stage(card)["sha256"]
    else:
        stage(card)["sha256"] = value
    write_card(bundle_dir, card)
    refusal(bundle_dir, "stages.global.sha256")


@pytest.mark.parametrize("value", ["", None, "MISSING"])
def test_an_fp16_graph_without_its_sha256_is_refused(bundle_dir, value):
    shutil.copy(bundle_dir / "global.onnx", bundle_dir / "global.fp16.onnx")  # a working graph
    card = read_card(bundle_dir)
    stage(card)["fp16_file"] = "global.fp16.onnx"
    if value != "MISSING":
        stage(card)["fp16_sha256"] = value
    write_card(bundle_dir, card)
    refusal(bundle_dir, "stages.global.fp16_sha256")


def test_a_sha256_without_its_file_is_refused(bundle_dir):
    card = read_card(bundle_dir)
    stage(card)["int8_sha256"] = stage(card)["sha256"]
    write_card(bundle_dir, card)
    refusal(bundle_dir, "stages.global.int8_sha256", "int8_file")


def test_precision_graph_never_skips_the_hash(bundle_dir):
    """A hand-built StageSpec with an empty digest is refused, not loaded unchecked."""
    (bundle_dir / "global.fp16.onnx").write_bytes(b"not the graph the card was made with")
    spec = load_bundle(bundle_dir).card.stages[0]
    unhashed = StageSpec(**{**spec.__dict__, "fp16_file": "global.fp16.onnx", "fp16_sha256": ""})
    with pytest.raises(BundleError, match="fp16_sha256") as caught:
        precision_graph(bundle_dir, unhashed, "fp16")
    assert "\n" not in caught.value.one_line()


def test_load_bundle_has_no_switch_to_skip_the_hash():
    assert list(inspect.signature(load_bundle).parameters) == ["path"]


def test_missing_file_and_sha_mismatch_keep_their_messages(bundle_dir):
    (bundle_dir / "global.onnx").write_bytes(b"truncated")
    refusal(bundle_dir, "global.onnx does not match the sha256")
    (bundle_dir / "global.onnx").unlink()
    refusal(bundle_dir, "is missing global.onnx (stage 'global')")
    (bundle_dir / CARD_NAME).unlink()
    refusal(bundle_dir, f"has no {CARD_NAME}")
    shutil.rmtree(bundle_dir)
    refusal(bundle_dir, "does not exist or is not a folder")


# --- 3. every field is validated ---------------------------------------------------------------


def _set(path: str, value: Any):
    """A card edit: set the dotted path (from the card's root) to value; DELETE removes it."""

    def edit(card: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = card
        for key in parents:
            node = node[key]
        if value == "DELETE":
            del node[last]
        else:
            node[last] = value

    return edit


def _tiling(**changes: Any) -> dict[str, Any]:
    tiling = {"resize_to": [64, 64], "tile": 32, "stride": 32, "padding": "reflect"}
    return {**tiling, **changes}


S = "stages.global"
BAD_FIELDS = [
    # weights
    (f"{S}.weight", "2", f"{S}.weight"),
    (f"{S}.weight", True, f"{S}.weight"),
    (f"{S}.weight", NAN, f"{S}.weight"),
    (f"{S}.weight", INF, f"{S}.weight"),
    (f"{S}.weight", -INF, f"{S}.weight"),
    (f"{S}.weight", -1.0, f"{S}.weight"),
    (f"{S}.weight", 10**400, f"{S}.weight"),
    # score normalisation
    ("score_normalisation", "x", "score_normalisation"),
    ("score_normalisation", [0, 1], "score_normalisation"),
    ("score_normalisation", {}, "score_normalisation.min"),
    ("score_normalisation", {"min": 0.0}, "score_normalisation.max"),
    ("score_normalisation", {"min": "a", "max": 1.0}, "score_normalisation.min"),
    ("score_normalisation", {"min": 0.0, "max": True}, "score_normalisation.max"),
    ("score_normalisation", {"min": NAN, "max": 1.0}, "score_normalisation.min"),
    ("score_normalisation", {"min": 0.0, "max": INF}, "score_normalisation.max"),
    ("score_normalisation", {"min": 1.0, "max": 1.0}, "score_normalisation.max"),
    ("score_normalisation", {"min": 2.0, "max": 1.0}, "score_normalisation.max"),
    # stage entries and the stage table
    ("stages", {"global": 3}, S),
    ("stages", {"global": []}, S),
    ("stages", {"global": "global.onnx"}, S),
    ("stages", [], "stages"),
    ("stages", {}, "stages"),
    # threshold
    ("threshold.value", NAN, "threshold.value"),
    ("threshold.value", INF, "threshold.value"),
    ("threshold.value", -INF, "threshold.value"),
    ("threshold.value", "0.5", "threshold.value"),
    ("threshold.value", True, "threshold.value"),
    ("threshold.value", 10**400, "threshold.value"),
    ("threshold", 0.5, "threshold"),
    ("threshold.method", 5, "threshold.method"),
    ("threshold.detail", ["a"], "threshold.detail"),
    # input
    (f"{S}.input.mean", [NAN], f"{S}.input.mean"),
    (f"{S}.input.mean", ["0.5"], f"{S}.input.mean"),
    (f"{S}.input.mean", [True], f"{S}.input.mean"),
    (f"{S}.input.mean", [0.5, 0.5], f"{S}.input.mean"),
    (f"{S}.input.mean", [1e300], f"{S}.input.mean"),
    (f"{S}.input.std", [INF], f"{S}.input.std"),
    (f"{S}.input.std", [0.0], f"{S}.input.std"),
    (f"{S}.input.std", [1e-300], f"{S}.input.std"),
    (f"{S}.input.height", 100_000, f"{S}.input.height"),
    (f"{S}.input.width", MAX_SIDE + 1, f"{S}.input.width"),
    (f"{S}.input.height", 0, f"{S}.input.height"),
    (f"{S}.input.height", 32.0, f"{S}.input.height"),
    (f"{S}.input.height", "32", f"{S}.input.height"),
    (f"{S}.input.colour", "bgr", f"{S}.input.colour"),
    (f"{S}.input.colour", ["gray"], f"{S}.input.colour"),
    (f"{S}.input.resize", "bicubic", f"{S}.input.resize"),
    (f"{S}.input.channels", 3, f"{S}.input.channels"),
    (f"{S}.input", [], f"{S}.input"),
    # tiling
    (f"{S}.tiling", _tiling(resize_to=[100_000, 100_000]), f"{S}.tiling.resize_to"),
    (f"{S}.tiling", _tiling(resize_to=[16_000, 16_000], stride=1), f"{S}.tiling"),
    (f"{S}.tiling", _tiling(resize_to=[32, 32], tile=64, stride=64), f"{S}.tiling.tile"),
    (f"{S}.tiling", _tiling(resize_to=[128, 16]), f"{S}.tiling.tile"),
    (f"{S}.tiling", _tiling(stride=64), f"{S}.tiling.stride"),
    (f"{S}.tiling", _tiling(stride=0), f"{S}.tiling.stride"),
    (f"{S}.tiling", _tiling(resize_to=[64]), f"{S}.tiling.resize_to"),
    (f"{S}.tiling", _tiling(resize_to=[64, True]), f"{S}.tiling.resize_to"),
    (f"{S}.tiling", _tiling(padding="zero"), f"{S}.tiling.padding"),
    (f"{S}.tiling", _tiling(padding=None), f"{S}.tiling.padding"),
    (f"{S}.tiling", _tiling(order="column-major"), f"{S}.tiling.order"),
    (f"{S}.tiling", "64x64", f"{S}.tiling"),
    # how stages combine and reduce, outputs, names
    ("combine", "median", "combine"),
    ("combine", 5, "combine"),
    (f"{S}.reduce", ["max"], f"{S}.reduce"),
    (f"{S}.reduce", "min", f"{S}.reduce"),
    (f"{S}.outputs", ["score", 1], f"{S}.outputs"),
    (f"{S}.outputs", ["score", ""], f"{S}.outputs"),
    (f"{S}.outputs", ["score", "score"], f"{S}.outputs"),
    (f"{S}.outputs", ["amap"], f"{S}.outputs"),
    (f"{S}.outputs", "score", f"{S}.outputs"),
    (f"{S}.input_name", "", f"{S}.input_name"),
    (f"{S}.input_name", 5, f"{S}.input_name"),
    (f"{S}.file", "", f"{S}.file"),
    (f"{S}.file", 5, f"{S}.file"),
    (f"{S}.file", "global\x00.onnx", f"{S}.file"),
    (f"{S}.normalisation_in_graph", "false", f"{S}.normalisation_in_graph"),
    (f"{S}.normalisation_in_graph", True, f"{S}.normalisation_in_graph"),
    # engine
    (f"{S}.engine", "fp16", f"{S}.engine"),
    (f"{S}.engine", {"precision": ["fp16"]}, f"{S}.engine.precision"),
    (f"{S}.engine", {"max_batch": 10**9}, f"{S}.engine.max_batch"),
    (f"{S}.engine", {"workspace_mib": 10**12}, f"{S}.engine.workspace_mib"),
    (f"{S}.engine", {"max_batch": 8.0}, f"{S}.engine.max_batch"),
    # the card's own fields
    ("method", "", "method"),
    ("method", 5, "method"),
    ("method", "DELETE", "method"),
    ("training", 5, "training"),
    ("training", "x", "training"),
    ("metrics", "x", "metrics"),
    ("metrics", [1, 2], "metrics"),
    ("created", 5, "created"),
    ("adedge_version", ["0.1"], "adedge_version"),
    ("format_version", 0, "format_version"),
    ("format_version", -1, "format_version"),
    ("format_version", "1", "format_version"),
    ("format_version", 1.0, "format_version"),
    ("format_version", True, "format_version"),
    ("format_version", None, "format_version"),
    ("format_version", "DELETE", "format_version"),
]


@pytest.mark.parametrize(
    "path, value, field", BAD_FIELDS, ids=[f"{p}={v!r}"[:60] for p, v, _ in BAD_FIELDS]
)
def test_every_field_is_validated(bundle_dir, path, value, field):
    card = read_card(bundle_dir)
    _set(path, value)(card)
    write_card(bundle_dir, card)
    line = refusal(bundle_dir, f"field '{field}'")
    assert line.startswith(str(bundle_dir / CARD_NAME)), line


def test_parse_card_refuses_without_a_folder(mean_bundle):
    """parse_card (no folder: the reader alone) names the field as load_bundle does."""
    card = read_card(mean_bundle)
    stage(card)["weight"] = NAN
    with pytest.raises(BundleError, match=r"stages\.global\.weight"):
        parse_card(card)
    with pytest.raises(BundleError, match="top level"):
        parse_card([card])


def test_a_card_of_deeply_nested_brackets_is_one_line(bundle_dir):
    write_card(bundle_dir, "[" * 100_000 + "]" * 100_000)
    refusal(bundle_dir, "not valid JSON", "nested too deeply")


def test_a_number_literal_of_5000_digits_is_one_line(bundle_dir):
    text = json.dumps(read_card(bundle_dir)).replace('"weight": 1.0', '"weight": ' + "7" * 5000)
    assert "7" * 5000 in text
    write_card(bundle_dir, text)
    refusal(bundle_dir, "not valid JSON")


def test_an_oversized_card_is_refused_before_it_is_read(bundle_dir):
    card = read_card(bundle_dir)
    card["metrics"] = {"padding": "x" * MAX_CARD_BYTES}
    write_card(bundle_dir, card)
    refusal(bundle_dir, "larger than")


def test_a_card_that_is_not_utf8_is_one_line(bundle_dir):
    (bundle_dir / CARD_NAME).write_bytes(b"\xff\xfe{}")
    refusal(bundle_dir, "not valid JSON")


def test_nan_in_informational_metrics_is_kept(bundle_dir):
    """metrics/training are carried, not read: an INT8 parity rho can be NaN (export writes
    it and does not fail for INT8), so NaN there must not make a bundle unloadable."""
    card = read_card(bundle_dir)
    card["metrics"] = {"precision": {"int8": {"stages": {"global": {"spearman": NAN}}}}}
    write_card(bundle_dir, card)
    loaded = load_bundle(bundle_dir).card
    assert math.isnan(loaded.metrics["precision"]["int8"]["stages"]["global"]["spearman"])


def test_numbers_at_the_limits_are_accepted(bundle_dir):
    card = read_card(bundle_dir)
    side = 2048  # 2048 / 32 = 64 tiles per axis: 4096 tiles per frame, the limit
    assert (side // 32) ** 2 == MAX_TILES_PER_FRAME
    stage(card)["tiling"] = _tiling(resize_to=[side, side])
    stage(card)["weight"] = 0
    card["score_normalisation"] = {"min": -1, "max": 2.5, "note": "extra keys are ignored"}
    card["threshold"]["value"] = -3
    card["unknown_key"] = {"is": "ignored"}
    write_card(bundle_dir, card)
    loaded = load_bundle(bundle_dir).card
    assert tile_count(loaded.stages[0].tiling) == MAX_TILES_PER_FRAME
    assert loaded.stages[0].weight == 0.0 and isinstance(loaded.stages[0].weight, float)
    assert loaded.score_normalisation == {"min": -1.0, "max": 2.5}
    assert loaded.threshold.value == -3.0
    stage(card)["tiling"] = _tiling(resize_to=[side, side + 1])  # one more column of tiles
    write_card(bundle_dir, card)
    refusal(bundle_dir, f"{S}.tiling", str(MAX_TILES_PER_FRAME))


@pytest.mark.parametrize(
    "resize_to, tile, stride",
    [
        ((256, 256), 32, 16),
        ((100, 100), 32, 16),
        ((576, 768), 64, 40),
        ((33, 32), 32, 1),
        ((512, 512), 64, 64),
        ((50, 70), 16, 8),
        ((32, 32), 32, 32),
    ],
)
def test_tile_count_is_the_runtimes(resize_to, tile, stride):
    tiling = TilingSpec(resize_to, tile, stride)
    assert tile_count(tiling) == plan_tiles(resize_to, tiling).count


def test_check_threshold_for_command_line_overrides():
    assert check_threshold(0.25, "--threshold") == 0.25
    assert check_threshold(-2, "--threshold") == -2.0
    for bad in (NAN, INF, -INF, True, "0.5", None):
        with pytest.raises(AdedgeError) as caught:
            check_threshold(bad, "--threshold")
        line = caught.value.one_line()
        assert line.startswith("--threshold must be a finite number") and "\n" not in line


def test_detector_refuses_a_nan_threshold_override(mean_bundle):
    with pytest.raises(AdedgeError, match="finite number"):
        Detector(mean_bundle, threshold=NAN, threads=1)


# --- 4. one migrate step -----------------------------------------------------------------------


def test_a_v1_card_from_the_exporter_loads_through_migrate(mean_bundle):
    data = read_card(mean_bundle)  # written by Card.to_dict(), as the exporter writes it
    assert data["format_version"] == 1
    migrated = migrate(data)
    assert migrated["format_version"] == FORMAT_VERSION and migrated is not data
    assert data == read_card(mean_bundle)  # the input is left alone
    card = load_bundle(mean_bundle).card
    assert card.format_version == FORMAT_VERSION
    assert card.to_dict()["format_version"] == FORMAT_VERSION
    assert parse_card(card.to_dict()) == card  # the written card reads back the same


def test_migrate_runs_every_step_from_old_to_current(monkeypatch, mean_bundle):
    """With a (pretend) format 3, a v1 card goes through the 1->2 and 2->3 steps in order."""
    steps = []

    def one_to_two(data):
        steps.append(1)
        return {**data, "renamed": data["method"]}

    def two_to_three(data):
        steps.append(2)
        return {**data, "method": data.pop("renamed")}

    monkeypatch.setattr(bundle_module, "FORMAT_VERSION", 3)
    monkeypatch.setattr(bundle_module, "MIGRATIONS", {1: one_to_two, 2: two_to_three})
    out = migrate(read_card(mean_bundle))
    assert steps == [1, 2] and out["format_version"] == 3 and out["method"] == "mean"
    assert parse_card(read_card(mean_bundle)).format_version == 3


def test_migrate_refuses_versions_it_cannot_read(mean_bundle):
    data = read_card(mean_bundle)
    for version in (0, -1, "1", 1.5, True, None):
        with pytest.raises(BundleError, match="format_version"):
            migrate({**data, "format_version": version})
    with pytest.raises(BundleError, match="newer than this adedge") as caught:
        migrate({**data, "format_version": FORMAT_VERSION + 1})
    assert "upgrade adedge" in caught.value.hint


# --- 5. unknown methods ------------------------------------------------------------------------


def test_an_unknown_method_streams_with_a_one_line_warning(bundle_dir, digit_frames):
    from adedge.runtime.bench import bench_bundle, render

    card = read_card(bundle_dir)
    card["method"] = "patchcore"
    write_card(bundle_dir, card)
    loaded = load_bundle(bundle_dir).card
    warning = loaded.method_warning()
    assert warning is not None and "\n" not in warning
    assert "'patchcore'" in warning and "ygan" in warning
    results = Detector(bundle_dir, threads=1).score_frames(digit_frames[:4])
    assert len(results) == 4 and all(np.isfinite(r.score) for r in results)
    bench = bench_bundle(bundle_dir, [1], seconds=0.05, threads=1)
    assert bench["method"] == "patchcore" and bench["paper_ms_per_image"] is None
    assert "patchcore" in render(bench)


def test_known_methods_have_no_warning(mean_bundle):
    card = load_bundle(mean_bundle).card
    for name in ("ygan", "igd", "cbigan"):
        assert Card(**{**card.__dict__, "method": name}).method_warning() is None
