"""A bad card is one line naming the field and the fix, never a traceback.

Files a card names stay inside the bundle folder, every graph is hashed, every field the
reader accepts is type- and range-checked (NaN and infinities included), older card
versions go through one ``migrate`` step, and a card of an unknown method still streams with
a one-line warning. The bundles are the tiny real ONNX mean bundle of conftest (no torch).
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

from adedge import card_reader
from adedge.bundle import (
    CARD_NAME,
    FORMAT_VERSION,
    MAX_SIDE,
    MAX_TILES_PER_FRAME,
    Card,
    GraphFile,
    TilingSpec,
    check_threshold,
    load_bundle,
    migrate,
    parse_card,
    precision_graph,
    sha256_file,
    tile_count,
)
from adedge.card_reader import MAX_CARD_BYTES
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


def graphs(card: dict[str, Any]) -> dict[str, Any]:
    return stage(card)["graphs"]


def graph_field(precision: str, key: str = "file") -> str:
    return f"stages.global.graphs.{precision}.{key}"


def outside_copy(folder: Path) -> Path:
    """A valid copy of the bundle's graph just outside the folder."""
    target = folder.parent / "x.onnx"
    shutil.copy(folder / "global.onnx", target)
    return target


# --- 1. files stay inside the bundle -----------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("name", ["../x.onnx", "sub/../../x.onnx", "ABSOLUTE"])
def test_card_files_must_stay_inside_the_bundle(bundle_dir, precision, name):
    target = outside_copy(bundle_dir)  # exists, with the right sha256: loaded before the fix
    card = read_card(bundle_dir)
    file = str(target) if name == "ABSOLUTE" else name
    graphs(card)[precision] = {"file": file, "sha256": sha256_file(target)}
    write_card(bundle_dir, card)
    refusal(bundle_dir, graph_field(precision), "outside the bundle folder")


def test_a_symlink_leading_out_of_the_bundle_is_refused(bundle_dir):
    (bundle_dir / "link.onnx").symlink_to(outside_copy(bundle_dir))
    card = read_card(bundle_dir)
    graphs(card)["fp32"]["file"] = "link.onnx"
    write_card(bundle_dir, card)
    refusal(bundle_dir, graph_field("fp32"), "outside the bundle folder")


def test_a_symlinked_folder_leading_out_is_refused(bundle_dir):
    outside_copy(bundle_dir)
    (bundle_dir / "graphs").symlink_to(bundle_dir.parent)
    card = read_card(bundle_dir)
    graphs(card)["fp16"] = {"file": "graphs/x.onnx", "sha256": graphs(card)["fp32"]["sha256"]}
    write_card(bundle_dir, card)
    refusal(bundle_dir, graph_field("fp16"), "outside the bundle folder")


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
        graphs(card)["fp32"]["file"] = name
        write_card(bundle_dir, card)
        lines.append(refusal(bundle_dir, graph_field("fp32"), "outside the bundle folder"))
    assert lines[0] == lines[1]


def test_a_link_to_an_existing_or_missing_outside_file_reads_the_same(bundle_dir):
    lines = []
    for target in (outside_copy(bundle_dir), bundle_dir.parent / "missing.onnx"):
        link = bundle_dir / "link.onnx"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        card = read_card(bundle_dir)
        graphs(card)["fp32"]["file"] = "link.onnx"
        write_card(bundle_dir, card)
        lines.append(refusal(bundle_dir, graph_field("fp32")))
    assert lines[0] == lines[1]


def test_precision_graph_checks_containment_for_hand_built_stages(bundle_dir):
    """Backends reach the FP16/INT8 graphs through precision_graph, which checks again."""
    spec = load_bundle(bundle_dir).card.stages[0]
    lines = []
    for name in ("../x.onnx", "../missing.onnx"):
        outside = spec.with_graph("fp16", GraphFile(name, spec.sha256))
        with pytest.raises(BundleError) as caught:
            precision_graph(bundle_dir, outside, "fp16")
        lines.append(caught.value.one_line())
        outside_copy(bundle_dir)  # the second name's sibling now exists; the first did not
    assert graph_field("fp16") in lines[0] and "outside the bundle folder" in lines[0]
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
        del graphs(card)["fp32"]["sha256"]
    else:
        graphs(card)["fp32"]["sha256"] = value
    write_card(bundle_dir, card)
    refusal(bundle_dir, graph_field("fp32", "sha256"))


@pytest.mark.parametrize("value", ["", None, "MISSING"])
def test_an_fp16_graph_without_its_sha256_is_refused(bundle_dir, value):
    shutil.copy(bundle_dir / "global.onnx", bundle_dir / "global.fp16.onnx")  # a working graph
    card = read_card(bundle_dir)
    graphs(card)["fp16"] = {"file": "global.fp16.onnx"}
    if value != "MISSING":
        graphs(card)["fp16"]["sha256"] = value
    write_card(bundle_dir, card)
    refusal(bundle_dir, graph_field("fp16", "sha256"))


def test_a_sha256_without_its_file_is_refused(bundle_dir):
    card = read_card(bundle_dir)
    graphs(card)["int8"] = {"sha256": graphs(card)["fp32"]["sha256"]}
    write_card(bundle_dir, card)
    refusal(bundle_dir, graph_field("int8"), "missing")


def test_precision_graph_never_skips_the_hash(bundle_dir):
    """A hand-built StageSpec with an empty digest is refused, not loaded unchecked."""
    (bundle_dir / "global.fp16.onnx").write_bytes(b"not the graph the card was made with")
    spec = load_bundle(bundle_dir).card.stages[0]
    unhashed = spec.with_graph("fp16", GraphFile("global.fp16.onnx", ""))
    with pytest.raises(BundleError, match=r"graphs\.fp16\.sha256") as caught:
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
    # graphs
    (f"{S}.graphs", "global.onnx", f"{S}.graphs"),
    (f"{S}.graphs", {}, f"{S}.graphs.fp32"),
    (f"{S}.graphs.fp64", {"file": "x.onnx", "sha256": "0" * 64}, f"{S}.graphs"),
    (f"{S}.graphs.fp32", "global.onnx", f"{S}.graphs.fp32"),
    (f"{S}.graphs.fp32.file", "", f"{S}.graphs.fp32.file"),
    (f"{S}.graphs.fp32.file", 5, f"{S}.graphs.fp32.file"),
    (f"{S}.graphs.fp32.file", "global\x00.onnx", f"{S}.graphs.fp32.file"),
    (f"{S}.graphs.fp32.file", "DELETE", f"{S}.graphs.fp32.file"),
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
    # how tile scores reduce, outputs, names
    (f"{S}.reduce", ["max"], f"{S}.reduce"),
    (f"{S}.reduce", "min", f"{S}.reduce"),
    (f"{S}.outputs", ["score", 1], f"{S}.outputs"),
    (f"{S}.outputs", ["score", ""], f"{S}.outputs"),
    (f"{S}.outputs", ["score", "score"], f"{S}.outputs"),
    (f"{S}.outputs", ["amap"], f"{S}.outputs"),
    (f"{S}.outputs", "score", f"{S}.outputs"),
    (f"{S}.input_name", "", f"{S}.input_name"),
    (f"{S}.input_name", 5, f"{S}.input_name"),
    # engine
    (f"{S}.engine", "fp16", f"{S}.engine"),
    (f"{S}.engine", {"precision": ["fp16"]}, f"{S}.engine.precision"),
    (f"{S}.engine", {"max_batch": 10**9}, f"{S}.engine.max_batch"),
    (f"{S}.engine", {"workspace_mib": 10**12}, f"{S}.engine.workspace_mib"),
    (f"{S}.engine", {"max_batch": 8.0}, f"{S}.engine.max_batch"),
    (f"{S}.engine", {"fp32_layers": "conv1"}, f"{S}.engine.fp32_layers"),
    (f"{S}.engine", {"fp32_layers": ["conv1", 3]}, f"{S}.engine.fp32_layers"),
    # ONNX Runtime's blocked layout
    (f"{S}.nchwc", "false", f"{S}.nchwc"),
    (f"{S}.nchwc", 0, f"{S}.nchwc"),
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
    card["threshold"]["value"] = -3
    card["unknown_key"] = {"is": "ignored"}
    write_card(bundle_dir, card)
    loaded = load_bundle(bundle_dir).card
    assert tile_count(loaded.stages[0].tiling) == MAX_TILES_PER_FRAME
    assert loaded.stages[0].weight == 0.0 and isinstance(loaded.stages[0].weight, float)
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


def v1_card(card: dict[str, Any], combine: str = "sum") -> dict[str, Any]:
    """The same card as adedge 0.1's exporter wrote it (format 1): flat graph fields,
    ``combine``, ``score_normalisation`` null."""
    old = json.loads(json.dumps(card))
    old["format_version"] = 1
    old["combine"] = combine
    old["score_normalisation"] = None
    for entry in old["stages"].values():
        for precision, graph in entry.pop("graphs").items():
            prefix = "" if precision == "fp32" else f"{precision}_"
            entry[f"{prefix}file"], entry[f"{prefix}sha256"] = graph["file"], graph["sha256"]
        entry["normalisation_in_graph"] = False
    return old


def test_a_v1_card_loads_through_migrate(bundle_dir):
    current = read_card(bundle_dir)
    assert current["format_version"] == FORMAT_VERSION == 2
    old = v1_card(current)
    migrated = migrate(old)
    assert migrated["format_version"] == FORMAT_VERSION and migrated is not old
    assert old == v1_card(current)  # the input is left alone
    write_card(bundle_dir, old)
    card = load_bundle(bundle_dir).card
    assert card == parse_card(current)  # the same card as the one written now
    assert parse_card(card.to_dict()) == card  # and it writes back as version 2


def test_a_v1_card_that_averaged_its_stages_keeps_its_scores(bundle_dir, digit_frames):
    """combine: mean (never written, but readable) becomes weights divided by the stages."""
    current = read_card(bundle_dir)
    two = json.loads(json.dumps(current))
    two["stages"]["second"] = json.loads(json.dumps(stage(current)))
    write_card(bundle_dir, v1_card(two, combine="mean"))
    averaged = Detector(bundle_dir, threads=1).score_images(digit_frames[:3])[0]
    write_card(bundle_dir, current)
    single = Detector(bundle_dir, threads=1).score_images(digit_frames[:3])[0]
    np.testing.assert_allclose(averaged, single, rtol=1e-6)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda c: c.update(combine="median"), "combine"),
        (lambda c: c.update(score_normalisation={"min": 0, "max": 1}), "score_normalisation"),
        (lambda c: stage(c).update(normalisation_in_graph=True), f"{S}.normalisation_in_graph"),
        (lambda c: stage(c).update(int8_sha256="0" * 64), f"{S}.int8_sha256"),
        (lambda c: stage(c).update(fp16_file="global.fp16.onnx"), f"{S}.fp16_sha256"),
        (lambda c: stage(c).pop("file"), f"{S}.sha256"),
        (lambda c: stage(c).update(file="../x.onnx"), f"{S}.graphs.fp32.file"),
    ],
)
def test_a_bad_v1_card_is_one_line_naming_the_field(bundle_dir, edit, field):
    old = v1_card(read_card(bundle_dir))
    edit(old)
    write_card(bundle_dir, old)
    refusal(bundle_dir, f"field '{field}'")


def test_migrate_runs_every_step_from_old_to_current(monkeypatch, bundle_dir):
    """With a (pretend) format 4, a v1 card goes through the 1->2, 2->3 and 3->4 steps."""
    steps = []
    real = card_reader.MIGRATIONS[1]

    def one_to_two(data, reader):
        steps.append(1)
        return real(data, reader)

    def two_to_three(data, reader):
        steps.append(2)
        return {**data, "renamed": data["method"]}

    def three_to_four(data, reader):
        steps.append(3)
        return {**data, "method": data.pop("renamed")}

    monkeypatch.setattr(card_reader, "FORMAT_VERSION", 4)
    migrations = {1: one_to_two, 2: two_to_three, 3: three_to_four}
    monkeypatch.setattr(card_reader, "MIGRATIONS", migrations)
    out = migrate(v1_card(read_card(bundle_dir)))
    assert steps == [1, 2, 3] and out["format_version"] == 4 and out["method"] == "mean"
    assert "graphs" in stage(out) and "file" not in stage(out)


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
