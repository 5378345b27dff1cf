"""`adedge triton-repo`: the repository's layout, its configs parsed by Triton's real schema
(tritonclient's model_config_pb2 in .venv-triton, which pins protobuf<7) and equal to the
ONNX graphs, the card round-tripping through the config, versions that are only ever added,
and one-line refusals. Torch-free: bundles from tests/bundles.py."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import onnx
import pytest
from bundles import (
    FLOAT,
    onnx_model,
    tensor,
    two_stage_bundle,
    write_bundle,
    write_tile_bundle,
)
from cli_helpers import assert_one_line_error, run_cli
from onnx import helper

from adedge.bundle import CARD_NAME, TilingSpec, load_bundle, sha256_file
from adedge.errors import AdedgeError
from adedge.preprocess import InputSpec
from adedge.runtime.triton_config import (
    TRITON_PYTHON_ENV,
    card_from_config,
    config_tensors,
    parse_configs,
    read_config_file,
)

ROOT = Path(__file__).resolve().parents[2]
TILING = TilingSpec((128, 96), 32, 32)  # 4 x 3 = 12 tiles per frame


@pytest.fixture()
def triton_python(monkeypatch) -> str:
    python = os.environ.get(TRITON_PYTHON_ENV) or str(ROOT / ".venv-triton/bin/python")
    if not Path(python).is_file():
        pytest.fail(f"no python with tritonclient at {python}: run `make triton-venv`")
    monkeypatch.setenv(TRITON_PYTHON_ENV, python)
    return python


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def graph_view(path: Path) -> tuple[dict, dict]:
    """The graph's inputs and outputs as (name -> (onnx type, dims without batch))."""
    graph = onnx.load(str(path)).graph

    def dims(value):
        return tuple(d.dim_value or -1 for d in value.type.tensor_type.shape.dim)

    return tuple(
        {v.name: (v.type.tensor_type.elem_type, dims(v)[1:]) for v in values}
        for values in (graph.input, graph.output)
    )


def test_repository_layout_schema_graph_and_card(tmp_path, monkeypatch, capsys, triton_python):
    bundle = two_stage_bundle(tmp_path / "plant", TILING)
    repo = tmp_path / "repo"
    code, out, err = run_cli(monkeypatch, capsys, "triton-repo", bundle, "--out", repo)
    assert code == 0, err
    assert "Triton's schema (tritonclient" in out
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()) == [
        "plant_global/1/model.onnx",
        "plant_global/config.pbtxt",
        "plant_local/1/model.onnx",
        "plant_local/config.pbtxt",
    ]
    card = load_bundle(bundle).card
    _, configs = parse_configs(
        [repo / "plant_global/config.pbtxt", repo / "plant_local/config.pbtxt"]
    )
    for config, stage, tiles in zip(configs, ("global", "local"), (None, 12), strict=True):
        model = repo / f"plant_{stage}"
        graph = model / "1/model.onnx"
        assert graph.read_bytes() == (bundle / f"{stage}.onnx").read_bytes()
        assert config["name"] == f"plant_{stage}"
        assert config["platform"] == "onnxruntime_onnx"
        inputs, outputs = graph_view(graph)
        for kind, expected in (("input", inputs), ("output", outputs)):
            got = config_tensors(config, kind)
            assert set(got) == set(expected)
            for name, (_, dims) in expected.items():
                assert got[name].data_type == "TYPE_FP32" and got[name].dims == dims
        size = int(config["max_batch_size"])
        assert size == (tiles or 8)  # a frame's tiles, or the card's default engine batch
        assert config["dynamic_batching"]["preferred_batch_size"] == [size]
        assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 1000
        assert config["instance_group"] == [{"kind": "KIND_GPU", "count": 1}]
        rebuilt, which = card_from_config(config)
        assert (rebuilt, which) == (card, stage)
        assert read_config_file(model / "config.pbtxt") == (card, stage)
    # the scalar score is Triton's dims [1] reshaped to [] per item
    assert "reshape: { shape: [ ] }" in (repo / "plant_local/config.pbtxt").read_text()


def test_options_reach_the_config(tmp_path, monkeypatch, capsys, triton_python):
    bundle = write_tile_bundle(tmp_path / "tiles", TILING)
    repo = tmp_path / "repo"
    code, _, err = run_cli(
        monkeypatch, capsys, "triton-repo", bundle, "--out", repo, "--name", "line3",
        "--max-batch", "48", "--preferred", "12,24,48", "--queue-delay-us", "250",
        "--instance-kind", "cpu", "--instances", "2",
    )  # fmt: skip
    assert code == 0, err
    _, (config,) = parse_configs([repo / "line3_local/config.pbtxt"])
    assert int(config["max_batch_size"]) == 48
    assert config["dynamic_batching"] == {
        "preferred_batch_size": [12, 24, 48],
        "max_queue_delay_microseconds": "250",
    }
    assert config["instance_group"] == [{"kind": "KIND_CPU", "count": 2}]


def test_export_again_adds_a_version_and_keeps_the_old_one(
    tmp_path, monkeypatch, capsys, triton_python
):
    bundle = write_tile_bundle(tmp_path / "tiles", TILING)
    repo = tmp_path / "repo"
    assert run_cli(monkeypatch, capsys, "triton-repo", bundle, "--out", repo)[0] == 0
    first = tree_digest(repo / "tiles_local/1")
    # a retrained bundle: same tensors, new threshold
    card_path = bundle / CARD_NAME
    data = json.loads(card_path.read_text())
    data["threshold"]["value"] = 0.75
    card_path.write_text(json.dumps(data))
    code, out, err = run_cli(monkeypatch, capsys, "triton-repo", bundle, "--out", repo)
    assert code == 0, err
    assert "tiles_local: version 2" in out
    assert tree_digest(repo / "tiles_local/1") == first
    assert (repo / "tiles_local/2/model.onnx").is_file()
    card, _ = read_config_file(repo / "tiles_local/config.pbtxt")
    assert card.threshold.value == 0.75  # the config carries the newest version's card


def test_incompatible_new_version_is_refused(tmp_path, monkeypatch, capsys, triton_python):
    repo = tmp_path / "repo"
    small = write_tile_bundle(tmp_path / "a", TILING)
    assert run_cli(monkeypatch, capsys, "triton-repo", small, "--out", repo, "--name", "m")[0] == 0
    before = tree_digest(repo)
    other = write_tile_bundle(
        tmp_path / "b", TilingSpec((128, 96), 16, 16), size=16,
        input_spec=InputSpec(16, 16, "gray", (0.0,), (1.0,)),
    )  # fmt: skip
    code, _, err = run_cli(monkeypatch, capsys, "triton-repo", other, "--out", repo, "--name", "m")
    assert_one_line_error(code, err, "m_local", "already exists with other inputs")
    assert tree_digest(repo) == before


def test_engine_for_the_target_ships_as_a_plan(tmp_path, monkeypatch, capsys, triton_python):
    """A TensorRT engine cannot be built here: a stand-in file with the sidecar
    `adedge engines build` writes checks the layout and config (the server loads it on a GPU)."""
    bundle = write_tile_bundle(tmp_path / "tiles", TILING)
    engine = bundle / "engines/local.sm87.trt10.3.0.fp16.b12.engine"
    engine.parent.mkdir()
    engine.write_bytes(b"engine stand-in")
    key = {"onnx_sha256": sha256_file(bundle / "local.onnx"), "compute_capability": [8, 7],
           "trt_version": "10.3.0", "precision": "fp16", "max_batch": 12}  # fmt: skip
    Path(f"{engine}.json").write_text(json.dumps({"key": key}))
    repo = tmp_path / "repo"
    args = ("triton-repo", bundle, "--out", repo, "--target", "sm87")
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert (repo / "tiles_local/1/model.plan").read_bytes() == b"engine stand-in"
    _, (config,) = parse_configs([repo / "tiles_local/config.pbtxt"])
    assert config["platform"] == "tensorrt_plan" and int(config["max_batch_size"]) == 12
    code, _, err = run_cli(monkeypatch, capsys, *args, "--max-batch", "24")
    assert_one_line_error(code, err, "above the TensorRT engine's max batch 12")
    code, _, err = run_cli(
        monkeypatch, capsys, "triton-repo", bundle, "--out", repo, "--target", "sm90"
    )
    assert_one_line_error(code, err, "no sm90 TensorRT engine")


def fixed_batch_bundle(folder: Path) -> Path:
    graph = onnx_model(
        [helper.make_node("ReduceMean", ["image"], ["score"], axes=[1, 2, 3], keepdims=0)],
        [tensor("image", FLOAT, [4, 1, 32, 32])],
        [tensor("score", FLOAT, [4])],
    )
    spec = InputSpec(32, 32, "gray", (0.0,), (1.0,))
    return write_bundle(folder, graph, spec, method="mean", threshold=0.5, detail="fixed batch")


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("fixed-batch", ("fixed batch dim (4)", "image")),
        ("bad-name", ("not a valid Triton model name",)),
        ("missing", ("does not exist",)),
        ("below-tiles", ("below the 12 tiles per frame",)),
    ],
)
def test_one_line_refusals_write_nothing(tmp_path, monkeypatch, capsys, triton_python, case, words):
    bundle = write_tile_bundle(tmp_path / "tiles", TILING)
    extra: tuple[str, ...] = ()
    if case == "fixed-batch":
        bundle = fixed_batch_bundle(tmp_path / "fixed")
    elif case == "bad-name":
        extra = ("--name", "../escape")
    elif case == "missing":
        bundle = tmp_path / "nowhere"
    else:
        extra = ("--max-batch", "8")
    repo = tmp_path / "repo"
    code, _, err = run_cli(monkeypatch, capsys, "triton-repo", bundle, "--out", repo, *extra)
    assert_one_line_error(code, err, *words)
    assert not repo.exists()


def test_schema_is_tritons_own(tmp_path, triton_python):
    """A config that Triton's schema rejects fails the check; without tritonclient (this
    venv: protobuf 7) the check says how to get it instead of being skipped."""
    broken = tmp_path / "config.pbtxt"
    broken.write_text('name: "m"\nmax_batch_size: 4\ndynamic_batching { preferred_size: 4 }\n')
    with pytest.raises(AdedgeError, match="preferred_size"):
        parse_configs([broken])
    os.environ.pop(TRITON_PYTHON_ENV)
    try:
        import tritonclient  # noqa: F401
    except ImportError:
        with pytest.raises(AdedgeError, match="tritonclient is not installed here"):
            parse_configs([broken])


def test_a_stage_without_nchwc_gets_the_level_without_layout_passes(
    tmp_path, monkeypatch, capsys, triton_python
):
    """A card's ``nchwc: false`` becomes Triton's graph level 1 (basic + extended), which
    its schema accepts; a stage with the default says nothing."""
    bundle = write_tile_bundle(tmp_path / "narrow", TILING)
    card = json.loads((bundle / CARD_NAME).read_text())
    card["stages"]["local"]["nchwc"] = False
    (bundle / CARD_NAME).write_text(json.dumps(card))
    repo = tmp_path / "repo"
    code, _, err = run_cli(monkeypatch, capsys, "triton-repo", bundle, "--out", repo)
    assert code == 0, err
    _, (config,) = parse_configs([repo / "narrow_local/config.pbtxt"])
    assert config["optimization"]["graph"] == {"level": 1}
    assert read_config_file(repo / "narrow_local/config.pbtxt")[0].stages[0].nchwc is False
