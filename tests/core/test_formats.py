"""One table of export formats, precisions and backends (adedge.formats): the enums behave as
their spellings on every Python, the CLI and the export library refuse the same options
with the same line, and the help text is written from the tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli

from adedge.errors import AdedgeError, ExportError
from adedge.formats import (
    BACKENDS,
    FORMATS,
    TRITON_FLAGS,
    BackendChoice,
    BackendKind,
    ExportFlag,
    Format,
    Precision,
    backend_help,
    check_engine_settings,
    check_export,
    check_flags,
    format_help,
    parse_backend,
    precisions_help,
)


@pytest.mark.runtime
def test_members_are_their_spellings():
    """str(), f-strings, ==, dict keys and JSON all see the plain spelling (Python 3.10's
    and 3.11's str-mixin enums differ in format(): the class pins it)."""
    for member in (*Format, *Precision, *BackendKind):
        assert str(member) == f"{member}" == f"{member:>0}" == member.value
        assert member == member.value and {member.value: 1}[member] == 1
    assert json.loads(json.dumps({"p": Precision.FP16, "f": [Format.ENGINE]})) == {
        "p": "fp16",
        "f": ["engine"],
    }
    assert ",".join((Precision.FP32, Precision.INT8)) == "fp32,int8"


@pytest.mark.runtime
def test_the_module_imports_nothing_heavy():
    code = (
        "import sys, adedge.formats; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'numpy', 'cv2', 'onnxruntime', 'onnx', 'torch', 'typer', 'rich'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


# --- backends ------------------------------------------------------------------------------


@pytest.mark.runtime
def test_every_backend_and_precision_of_the_table_parses():
    for backend in BACKENDS.values():
        assert parse_backend(backend.kind) == BackendChoice(backend.kind, None)
        for precision in backend.precisions:
            choice = parse_backend(f" {str(backend.kind).upper()}:{precision} ")
            assert choice == BackendChoice(backend.kind, precision)
            assert str(choice) == f"{backend.kind}:{precision}"
            assert isinstance(choice.precision, Precision)
    assert parse_backend("onnxruntime:") == BackendChoice(BackendKind.ONNXRUNTIME, None)


@pytest.mark.runtime
def test_triton_addresses_parse_as_the_triton_backend():
    choice = parse_backend(" triton://triton-a/Line_Global ")
    assert (choice.kind, choice.precision) == (BackendKind.TRITON, None)
    assert str(choice) == "triton://triton-a:8001/Line_Global"
    assert str(parse_backend("TRITON+HTTP://h:9000/m")) == "triton+http://h:9000/m"


@pytest.mark.runtime
@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (
            "cuda",
            "unknown backend 'cuda'. choose one of: onnxruntime, tensorrt, triton://HOST:8001/"
            "MODEL (gRPC) or triton+http://HOST:8000/MODEL",
        ),
        ("triton", "--backend triton needs the server and the model"),
        ("triton://h:99999/m", "is not a Triton model address"),
        (
            "tensorrt:int8",
            "backend 'tensorrt' has no precision 'int8'. choose one of: "
            "tensorrt:fp16, tensorrt:fp32.",
        ),
        ("onnxruntime:fp8", "choose one of: onnxruntime:fp32, onnxruntime:fp16, onnxruntime:int8"),
    ],
)
def test_bad_backends_are_one_line(spec, words):
    with pytest.raises(AdedgeError) as info:
        parse_backend(spec)
    assert words in info.value.one_line()


@pytest.mark.runtime
def test_backend_help_is_written_from_the_table():
    """The text --backend showed before the table existed, word for word, and Triton."""
    assert backend_help() == (
        "onnxruntime (CPU, FP32 graph), onnxruntime:fp16 (the FP16 graph), onnxruntime:int8 "
        "(the graph of `export --int8`), tensorrt (NVIDIA GPU; engine precision from the "
        "card, built on first use), tensorrt:fp16, tensorrt:fp32, triton://HOST:8001/MODEL "
        "(gRPC) or triton+http://HOST:8000/MODEL (a model of `adedge triton-repo` on a Triton "
        "server; the card comes from the server, the stages run there)."
    )


@pytest.mark.runtime
def test_cli_help_comes_from_the_tables(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "400")
    _, export_help, _ = run_cli(monkeypatch, capsys, "export", "--help")
    assert "'engine' (also build TensorRT engines" in export_help
    assert "'triton' (also add the bundle's stages to a Triton model repository" in export_help
    assert "--out is the bundle folder whatever the format" in format_help()
    assert "int8 (see --int8)" in export_help
    _, stream_help, _ = run_cli(monkeypatch, capsys, "stream", "--help")
    assert "onnxruntime:int8 (the graph of `export --int8`)" in stream_help
    assert format_help().startswith("Formats, comma-separated: 'onnx' (")
    assert precisions_help().startswith("Graphs to write, comma-separated: fp32 (always written)")


# --- export options ----------------------------------------------------------------------------


@pytest.mark.runtime
def test_check_export_gives_the_targets_in_table_order():
    targets = check_export("ENGINE", "int8, fp16,int8", half=True, max_batch=4, workspace_mib=64)
    assert targets.formats == (Format.ONNX, Format.ENGINE)  # ONNX always, first
    assert check_export("triton,engine", triton_repo="repo").formats == ("onnx", "engine", "triton")
    assert targets.graphs == ("fp32", "fp16", "int8")  # fp32 always, first
    assert targets.engine_precision is Precision.FP16
    assert check_export().graphs == ("fp32", "fp16") and check_export().formats == ("onnx",)
    assert check_export(precisions=("fp32",), int8=True).graphs == ("fp32", "int8")
    assert check_export(precisions="fp32").engine_precision == "fp32"


@pytest.mark.runtime
@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (
            {"formats": "onnx,tflite"},
            "format(s) tflite not supported. choose from: onnx, engine, triton",
        ),
        ({"triton_repo": "repo"}, "--triton-repo does nothing for --format onnx"),
        ({"formats": " , "}, "format(s) (none) not supported"),
        ({"precisions": "fp32,fp8,"}, "unknown precision(s) in --precisions: fp8, (empty)"),
        ({"precisions": ()}, "unknown precision(s) in --precisions: (none given)"),
        ({"precisions": "fp32", "half": True}, "--half builds the TensorRT engine from the FP16"),
        ({"max_batch": 0}, "--max-batch must be at least 1"),
        ({"workspace_mib": 8}, "--workspace is in MiB and must be at least 16"),
    ],
)
def test_bad_export_options_are_one_line(kwargs, words):
    with pytest.raises(ExportError) as info:
        check_export(**kwargs)
    line = info.value.one_line()
    assert words in line and "\n" not in line


@pytest.mark.runtime
def test_a_flag_no_written_format_takes_is_refused():
    """ONNX takes every flag but the Triton repository's (the card records the engine
    settings for a device that builds on first use); those belong to triton alone."""
    assert FORMATS[Format.ONNX].flags == frozenset(ExportFlag) - TRITON_FLAGS
    assert FORMATS[Format.TRITON].flags == TRITON_FLAGS
    check_flags([Format.ONNX, Format.TRITON], [ExportFlag.TRITON_REPO, ExportFlag.INT8])
    with pytest.raises(ExportError) as info:
        check_flags([Format.ONNX, Format.ENGINE], [ExportFlag.TRITON_PYTHON])
    assert "--triton-python does nothing for --format onnx,engine" in info.value.one_line()
    assert "add triton to --format" in info.value.one_line()
    check_flags([Format.ENGINE], [ExportFlag.HALF, ExportFlag.WORKSPACE])
    with pytest.raises(ExportError) as info:
        check_flags([Format.ENGINE], [ExportFlag.INT8])
    assert "--int8 does nothing for --format engine" in info.value.one_line()
    assert "add onnx to --format" in info.value.one_line()


@pytest.mark.parametrize(
    "args",
    [
        ["--format", "tflite"],
        ["--precisions", "fp64"],
        ["--precisions", "fp32", "--half"],
        ["--max-batch", "0"],
        ["--workspace", "4"],
        ["--triton-repo", "repo"],
    ],
)
def test_the_cli_and_the_library_refuse_with_the_same_line(monkeypatch, capsys, tmp_path, args):
    checkpoint = tmp_path / "garbage.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    out = tmp_path / "model"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "export",
        "--method",
        "ygan",
        "--checkpoint",
        checkpoint,
        "--out",
        out,
        *args,
    )
    flags = dict(zip(args[::2], args[1::2], strict=False))
    options = {
        "formats": flags.get("--format", "onnx"),
        "precisions": flags.get("--precisions", "fp32,fp16"),
        "half": "--half" in args,
        "max_batch": int(flags["--max-batch"]) if "--max-batch" in flags else None,
        "workspace_mib": int(flags.get("--workspace", 1024)),
        "triton_repo": flags.get("--triton-repo"),
    }
    pytest.importorskip("torch")
    from adedge.export.bundle_writer import export_bundle
    from adedge.export.options import ExportOptions

    with pytest.raises(ExportError) as info:
        export_bundle(ExportOptions(checkpoint, out, **options), log=lambda _: None)
    assert_one_line_error(code, err, info.value.one_line())
    assert not Path(out).exists()


@pytest.mark.runtime
def test_engine_settings_are_checked_by_one_function():
    """Export and a command that builds engines on the device check them alike."""
    assert check_engine_settings("fp16", 8, 512) is Precision.FP16
    assert check_engine_settings() is None
    for kwargs, words in [
        ({"precision": "int8"}, "--precision int8 is not an engine precision. choose one of: fp16"),
        ({"max_batch": 0}, "--max-batch must be at least 1"),
        ({"workspace_mib": 15}, "--workspace is in MiB and must be at least 16"),
    ]:
        with pytest.raises(ExportError) as info:
            check_engine_settings(**kwargs)
        assert words in info.value.one_line()


@pytest.mark.runtime
@pytest.mark.parametrize("command", ["eval", "bench", "stream"])
def test_a_bad_backend_is_refused_before_the_model_is_looked_for(
    monkeypatch, capsys, tmp_path, command
):
    extra = ["--data", "digits:anomaly=0"] if command == "eval" else []
    args = [command, "--model", tmp_path / "no-bundle", "--backend", "cuda", *extra]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "unknown backend 'cuda'", "onnxruntime, tensorrt")
