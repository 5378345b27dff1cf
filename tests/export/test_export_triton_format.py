"""`adedge export --format triton`: the bundle is written to --out as for every format, and its
stages are added to a Triton model repository (--triton-repo) as a new version whose config
carries the bundle's card; a second export adds version 2 beside an untouched version 1; and
--triton-repo without the format, a repository that cannot be written, or a python that
cannot run Triton's schema are one-line refusals before any checkpoint is loaded.

A real tiny Y-GAN run (the session's `trained_run`) exported with the FP32 graph only (well
under a second per export); the configs are parsed by tritonclient's real schema.
"""

from __future__ import annotations

import hashlib
import stat
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, export_cli
from read_only import read_only

from adedge.bundle import load_bundle, sha256_file
from adedge.errors import ExportError
from adedge.export.bundle_writer import export_bundle
from adedge.export.options import DEFAULT_TRITON_REPO, ExportOptions
from adedge.runtime.triton_config import read_config_file


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_export_writes_the_bundle_and_adds_it_as_versions(
    monkeypatch, capsys, trained_run, tmp_path
):
    bundle, repo = tmp_path / "plant", tmp_path / "repo"
    code, err = export_cli(
        monkeypatch, capsys, trained_run, bundle, "--format", "onnx,triton",
        "--precisions", "fp32", "--triton-repo", repo,
    )  # fmt: skip
    assert code == 0, err
    card = load_bundle(bundle).card  # the bundle is written to --out, as for any format
    model = repo / "plant_global"
    assert sorted(digests(repo)) == ["plant_global/1/model.onnx", "plant_global/config.pbtxt"]
    assert read_config_file(model / "config.pbtxt") == (card, "global")
    assert sha256_file(model / "1/model.onnx") == sha256_file(bundle / "global.onnx")
    assert f"triton: plant_global: version 1 (onnxruntime_onnx) in {model / '1'}" in err
    assert "triton: configs checked against Triton's schema (tritonclient" in err
    first = (model / "1/model.onnx").read_bytes()

    # the Python API: a second export into the same repository adds version 2
    export_bundle(
        ExportOptions(
            trained_run, bundle, "ygan", formats=("triton",), precisions=("fp32",), triton_repo=repo
        ),
        log=lambda _: None,
    )
    assert sorted(digests(repo)) == [
        "plant_global/1/model.onnx",
        "plant_global/2/model.onnx",
        "plant_global/config.pbtxt",
    ]
    assert (model / "1/model.onnx").read_bytes() == first  # version 1 is never rewritten
    newer = load_bundle(bundle).card
    assert sha256_file(model / "2/model.onnx") == sha256_file(bundle / "global.onnx")
    assert read_config_file(model / "config.pbtxt") == (newer, "global")  # the newest card


def test_the_repository_defaults_under_models():
    options = ExportOptions(Path("run"), Path("models/plant"), formats="onnx,triton")
    assert options.repository == DEFAULT_TRITON_REPO == Path("models/triton")
    assert options.targets.formats == ("onnx", "triton")


@pytest.mark.parametrize("flag, value", [("--triton-repo", "repo"), ("--triton-python", "py")])
def test_triton_flags_without_the_format_are_refused(
    monkeypatch, capsys, not_a_checkpoint, tmp_path, flag, value
):
    out = tmp_path / "model"
    code, err = export_cli(monkeypatch, capsys, not_a_checkpoint, out, flag, tmp_path / value)
    assert_one_line_error(code, err, f"{flag} does nothing for --format onnx", "add triton")
    assert not out.exists() and not (tmp_path / value).exists()
    options = ExportOptions(not_a_checkpoint, out, triton_repo=tmp_path / "repo")
    with pytest.raises(ExportError, match="--triton-repo does nothing for --format onnx"):
        export_bundle(options, log=lambda _: None)


def _a_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "repo").write_text("not a repository")
    return tmp_path / "repo", "is a file, not a model repository folder"


def _below_a_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "notes.txt").write_text("keep me")
    return tmp_path / "notes.txt" / "repo", "notes.txt' is a file, not a folder"


@pytest.mark.parametrize("make", [_a_file, _below_a_file])
def test_a_repository_that_cannot_be_written_is_refused_before_loading(
    monkeypatch, capsys, not_a_checkpoint, tmp_path, make
):
    repo, words = make(tmp_path)
    out = tmp_path / "model"
    code, err = export_cli(
        monkeypatch, capsys, not_a_checkpoint, out, "--format", "triton", "--triton-repo", repo
    )
    assert_one_line_error(code, err, "--triton-repo", words)
    assert "loading checkpoint" not in err and not out.exists()


def test_a_read_only_repository_is_refused_before_loading(
    monkeypatch, capsys, not_a_checkpoint, tmp_path
):
    repo = tmp_path / "repo"
    (repo / "plant_global/1").mkdir(parents=True)
    (repo / "plant_global/1/model.onnx").write_bytes(b"an earlier version")
    before = digests(repo)
    for target in (repo, repo / "new"):  # the repository itself, and one to be created in it
        with read_only(repo):
            code, err = export_cli(
                monkeypatch, capsys, not_a_checkpoint, tmp_path / "model",
                "--format", "onnx,triton", "--triton-repo", target,
            )  # fmt: skip
        assert_one_line_error(code, err, "--triton-repo", "cannot write in")
        assert "loading checkpoint" not in err
    assert digests(repo) == before


def _without_tritonclient(tmp_path: Path) -> Path:
    """A real python that cannot import tritonclient: this one without its site-packages."""
    script = tmp_path / "python-without-tritonclient"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.mark.parametrize("python", ["missing", "without"])
def test_a_python_that_cannot_check_the_schema_is_refused_before_loading(
    monkeypatch, capsys, not_a_checkpoint, tmp_path, python
):
    chosen = _without_tritonclient(tmp_path) if python == "without" else tmp_path / "nope"
    code, err = export_cli(
        monkeypatch, capsys, not_a_checkpoint, tmp_path / "model", "--format", "triton",
        "--triton-repo", tmp_path / "repo", "--triton-python", chosen,
    )  # fmt: skip
    assert_one_line_error(
        code, err, "Triton's schema", "pip install 'adedge[triton-client]'", "--triton-python"
    )
    assert "ADEDGE_TRITON_PYTHON" in err and "loading checkpoint" not in err
    assert not (tmp_path / "repo").exists()
    if python == "without":
        assert "ModuleNotFoundError" in err or "ImportError" in err
