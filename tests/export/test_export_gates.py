"""`adedge export`: bad input fails before any work (one line, exit 2, nothing written or
lost), and --precisions picks the graphs a bundle carries.

Most tests pass a checkpoint that is not one (a few bytes): the error they expect comes from
the check that runs before any checkpoint is loaded, or the checkpoint's own error would
show instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, export_cli
from read_only import read_only

from adedge.errors import AdedgeError, ExportError
from adedge.export import bundle_writer
from adedge.export.bundle_writer import export_bundle
from adedge.export.options import ExportOptions, check_output_folder


def test_unknown_precision_lists_the_valid_ones(monkeypatch, capsys, not_a_checkpoint, tmp_path):
    out = tmp_path / "model"
    code, err = export_cli(monkeypatch, capsys, not_a_checkpoint, out, "--precisions", "fp32,fp8,")
    assert_one_line_error(
        code, err, "unknown precision(s) in --precisions: fp8, (empty)", "fp32, fp16, int8"
    )
    assert "fp32 is always written" in err and not out.exists()


def test_half_needs_the_fp16_graph(monkeypatch, capsys, not_a_checkpoint, tmp_path):
    code, err = export_cli(
        monkeypatch, capsys, not_a_checkpoint, tmp_path / "m", "--precisions", "fp32", "--half"
    )
    assert_one_line_error(code, err, "--half", "add fp16 to --precisions")


@pytest.mark.parametrize("value", ["0", "100.5", "nan"])
def test_a_pixel_percentile_out_of_range_is_refused_before_loading(
    monkeypatch, capsys, not_a_checkpoint, tmp_path, value
):
    out = tmp_path / "m"
    code, err = export_cli(monkeypatch, capsys, not_a_checkpoint, out, "--pixel-percentile", value)
    assert_one_line_error(code, err, "--pixel-percentile", "at most 100", "99.9")
    assert not out.exists()
    with pytest.raises(AdedgeError, match="percentile"):  # the library checks it too
        bundle_writer.check_options(
            ExportOptions(not_a_checkpoint, tmp_path / "m", pixel_percentile=float(value))
        )


def test_the_library_checks_precisions_before_loading(not_a_checkpoint, tmp_path):
    for precisions, words in [
        (("fp32", "fp64"), "unknown precision(s) in --precisions: fp64"),
        ((), "(none given)"),
    ]:
        options = ExportOptions(not_a_checkpoint, tmp_path / "m", precisions=precisions)
        with pytest.raises(ExportError, match=words.replace("(", r"\(").replace(")", r"\)")):
            export_bundle(options, log=lambda _: None)
    assert ExportOptions(not_a_checkpoint, tmp_path, precisions="FP32, int8").graphs == (
        "fp32",
        "int8",
    )
    half = ExportOptions(not_a_checkpoint, tmp_path / "m", precisions=("fp32",), half=True)
    with pytest.raises(ExportError, match="--half"):
        export_bundle(half, log=lambda _: None)


@pytest.mark.parametrize(
    "precisions, int8, graphs",
    [
        (None, False, ("fp32", "fp16")),  # the default
        (None, True, ("fp32", "fp16", "int8")),  # --int8 still adds int8
        ("fp32", False, ("fp32",)),
        ("FP32, int8", False, ("fp32", "int8")),
        ("fp16", False, ("fp32", "fp16")),  # fp32 is always written
        ("fp32", True, ("fp32", "int8")),
    ],
)
def test_precisions_choose_the_graphs(
    monkeypatch, capsys, not_a_checkpoint, tmp_path, precisions, int8, graphs
):
    seen: list[ExportOptions] = []
    monkeypatch.setattr(bundle_writer, "export_bundle", lambda options, log: seen.append(options))
    extra = [*(["--precisions", precisions] if precisions else []), *(["--int8"] if int8 else [])]
    code, err = export_cli(monkeypatch, capsys, not_a_checkpoint, tmp_path / "m", *extra)
    assert code == 0, err
    assert seen[0].graphs == graphs


def _file(tmp_path: Path) -> tuple[Path, Path]:
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    return notes, notes


def _below_a_file(tmp_path: Path) -> tuple[Path, Path]:
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    return notes / "deeper" / "model", notes


def _folder_of_other_files(tmp_path: Path) -> tuple[Path, Path]:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return photos, photos / "holiday.jpg"


@pytest.mark.parametrize(
    "make, words",
    [
        (_file, ["notes.txt' is a file, not a bundle folder", "choose another --out"]),
        (_below_a_file, ["--out", "notes.txt' is a file, not a folder"]),
        (_folder_of_other_files, ["is a folder of other files (no adedge.json)"]),
    ],
)
def test_out_that_cannot_hold_a_bundle(
    monkeypatch, capsys, not_a_checkpoint, tmp_path, make, words
):
    out, kept = make(tmp_path)
    before = kept.read_bytes()
    code, err = export_cli(monkeypatch, capsys, not_a_checkpoint, out)
    assert_one_line_error(code, err, *words)
    assert kept.read_bytes() == before
    assert "loading checkpoint" not in err


def test_read_only_folder_is_refused_before_work_and_the_bundle_kept(
    monkeypatch, capsys, not_a_checkpoint, tmp_path
):
    parent = tmp_path / "shared"
    bundle = parent / "model"
    bundle.mkdir(parents=True)
    (bundle / "adedge.json").write_text('{"method": "ygan"}')
    (bundle / "global.onnx").write_bytes(b"an earlier export")
    with read_only(parent):
        code, err = export_cli(monkeypatch, capsys, not_a_checkpoint, bundle)
    assert_one_line_error(code, err, "cannot write in", "shared'", "--out")
    assert sorted(p.name for p in parent.iterdir()) == ["model"]
    assert (bundle / "adedge.json").read_text() == '{"method": "ygan"}'
    assert (bundle / "global.onnx").read_bytes() == b"an earlier export"


def test_an_existing_bundle_or_empty_folder_is_a_valid_out(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    check_output_folder(empty)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "adedge.json").write_text("{}")
    (bundle / "global.onnx").write_bytes(b"x")
    check_output_folder(bundle)
    check_output_folder(tmp_path / "new" / "deeper" / "model")
