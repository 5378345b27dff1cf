"""Tiled methods end to end on a real texture: train, export, evaluate and stream.

CBiGAN's texture mode (the runtime tiles each frame and takes the max over tile scores, so
a small defect is not averaged away) and IGD's global + local bundle on scikit-image's real
brick photograph with synthetic defects: the card declares the tiling, the runtime scores all
of a frame's tiles in one batch and gives what torch gives. Each is proven on a small
geometry; the papers' geometries (CBiGAN 512 px as 64 tiles, IGD 256 px with 225 patches)
are the same tests marked ``slow`` (``make test-all``). How well these barely trained models
detect is not asserted here: benchmarks/fidelity/ measures it on properly trained ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from jsonl_records import frame_records

from adedge.bundle import load_bundle
from adedge.data import load
from adedge.export.bundle_writer import export_bundle
from adedge.export.options import ExportOptions
from adedge.export.trace import rebuild_scorer
from adedge.metrics import auroc
from adedge.preprocess import prepare_batch
from adedge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from adedge.runtime.detector import Detector
from adedge.runtime.tiling import plan_tiles
from adedge.train.checkpoint import load_checkpoint
from adedge.train.trainer import TrainOptions, train
from adedge.train.views import grid_tiles

QUIET = {"log": lambda _: None}
BRICK = "texture:brick,limit=32"


def record_batches(monkeypatch) -> list[int]:
    """The batch sizes the real ONNX Runtime backend is called with, in order."""
    batches: list[int] = []
    real_run = OnnxRuntimeBackend.run

    def recording_run(self, batch):
        batches.append(len(batch))
        return real_run(self, batch)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", recording_run)
    return batches


def train_and_export(root: Path, name: str, data: str, **options) -> tuple[Path, Path]:
    run, model = root / "runs" / name, root / "models" / name
    train(TrainOptions(data=data, out=run, **options), **QUIET)
    export_bundle(ExportOptions(run, model), **QUIET)
    return run, model


@pytest.fixture(scope="session")
def cbigan_brick(tmp_path_factory) -> tuple[Path, Path]:
    """CBiGAN tiny, texture mode, 2 epochs on brick: 128px frames, 32px tiles (16 per frame)."""
    root = tmp_path_factory.mktemp("cbigan")
    return train_and_export(
        root, "brick", BRICK, method="cbigan", preset="tiny", epochs=2, monitor_test=False
    )


@pytest.fixture(scope="session")
def cbigan_512(tmp_path_factory) -> Path:
    """The paper's texture geometry: frames resized to 512, 64 tiles of 64x64 (1 epoch)."""
    root = tmp_path_factory.mktemp("cbigan512")
    _, model = train_and_export(
        root,
        "brick512",
        "texture:brick,limit=4",
        method="cbigan",
        preset="tiny",
        epochs=1,
        image_size=512,
        overrides={"tile": "64"},
        monitor_test=False,
    )
    return model


@pytest.fixture(
    params=[
        pytest.param(("cbigan_brick", 128, 16), id="128px-16-tiles"),
        pytest.param(("cbigan_512", 512, 64), id="paper-512px-64-tiles", marks=pytest.mark.slow),
    ]
)
def cbigan_geometry(request) -> tuple[Path, int, int]:
    """(bundle, frame side, tiles per frame) of a CBiGAN texture bundle."""
    name, side, tiles = request.param
    value = request.getfixturevalue(name)
    return (value[1] if isinstance(value, tuple) else value), side, tiles


def test_texture_card_declares_the_tiling(cbigan_brick):
    run, model = cbigan_brick
    card = load_bundle(model).card
    (stage,) = card.stages
    assert stage.name == "local" and stage.reduce == "max"
    assert stage.tiling.resize_to == (128, 128)
    assert (stage.tiling.tile, stage.tiling.stride) == (32, 32)
    assert (stage.input.height, stage.input.colour) == (32, "gray")
    assert stage.outputs == ("score", "amap")
    assert card.training["config"]["mode"] == "texture"
    assert card.metrics["parity"]["local"]["max_abs_diff"] <= 1e-4


def test_runtime_frame_scores_are_the_max_of_torch_tile_scores(cbigan_brick):
    """Runtime tiling + max over tiles == torch scorer on the same tiles, reduced by max."""
    run, model = cbigan_brick
    state = load_checkpoint(run / "best.pt")
    frames = load(BRICK).test.images[:6]
    batch = torch.from_numpy(prepare_batch(frames, state.frame_spec))
    plan = load_bundle(model).card.stages[0]
    tiles = grid_tiles(batch, state.stage_plan)
    with torch.no_grad():
        tile_scores = rebuild_scorer(state)(tiles)[0].numpy().reshape(len(frames), -1)
    scores, maps, _ = Detector(model).score_images_with_maps(frames)
    assert tile_scores.shape[1] == plan_tiles((128, 128), plan.tiling).count == 16
    np.testing.assert_allclose(scores, tile_scores.max(axis=1), rtol=1e-4, atol=1e-5)
    assert all(m.shape == (128, 128) and m.dtype == np.float32 for m in maps)


def test_eval_reports_the_auroc_of_the_detectors_own_scores(
    cbigan_brick, monkeypatch, capsys, tmp_path
):
    _, model = cbigan_brick
    out = tmp_path / "eval.json"
    code, _, err = run_cli(
        monkeypatch, capsys, "eval", "--model", model, "--data", BRICK, "--out", out
    )
    assert code == 0, err
    result = json.loads(out.read_text())
    test = load(BRICK).test
    scores, maps, _ = Detector(model).score_images_with_maps(test.images)
    assert result["n_test"] == len(test) == 80
    assert result["auroc"] == pytest.approx(auroc(test.labels, scores), abs=1e-9)
    pixels = np.concatenate([m.ravel() for m in maps])
    truth = np.concatenate([k.ravel() for k in test.masks])
    assert result["pixel_auroc"] == pytest.approx(auroc(truth, pixels), abs=1e-6)


def test_stream_scores_a_frames_tiles_in_one_batch(cbigan_geometry, monkeypatch, capsys, tmp_path):
    model, side, tiles = cbigan_geometry
    card = load_bundle(model).card
    assert card.stages[0].tiling.resize_to == (side, side)
    batches = record_batches(monkeypatch)
    events = tmp_path / "events.jsonl"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "stream",
        "--model",
        model,
        "--source",
        f"synthetic:texture=brick,size={side},frames=3",
        "--jsonl",
        events,
        "--quiet",
    )
    assert code == 0, err
    lines = frame_records(events)
    assert len(lines) == 3 and all(np.isfinite(e["score"]) for e in lines)
    assert batches == [tiles, tiles, tiles]


def test_export_refuses_two_checkpoints_of_the_same_stage(
    cbigan_brick, tmp_path, monkeypatch, capsys
):
    run, _ = cbigan_brick
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "export",
        "--method",
        "cbigan",
        "--checkpoint",
        run,
        "--checkpoint",
        run,
        "--out",
        tmp_path / "m",
    )
    assert_one_line_error(code, err, "both stage 'local'")
    assert not (tmp_path / "m").exists()


# --- IGD: a global and a local model in one bundle (Eq. 13, local max-pooling Eq. 15) -------


IGD_PATCHES = {64: 9, 256: 225}  # 32 px patches at stride 16: 3 x 3, and the paper's 15 x 15


@pytest.fixture(
    scope="session",
    params=[
        pytest.param(64, id="64px-9-patches"),
        pytest.param(256, id="paper-256px-225-patches", marks=pytest.mark.slow),
    ],
)
def igd_two_stage(request, tmp_path_factory) -> tuple[Path, Path, Path, int]:
    """IGD tiny on brick: a global run and a local run (32 px patches at stride 16), one
    bundle; (global run, local run, bundle, frame side)."""
    side = request.param
    root = tmp_path_factory.mktemp(f"igd{side}")
    common = {
        "method": "igd",
        "preset": "tiny",
        "epochs": 1,
        "image_size": side,
        "monitor_test": False,
    }
    data = "texture:brick,limit=4"
    runs = {}
    for mode in ("global", "local"):
        runs[mode] = root / mode
        train(TrainOptions(data=data, out=runs[mode], mode=mode, **common), **QUIET)
    model = root / "model"
    export_bundle(ExportOptions([runs["global"], runs["local"]], model), **QUIET)
    return runs["global"], runs["local"], model, side


def test_igd_bundle_sums_a_global_and_a_max_pooled_local_stage(igd_two_stage):
    global_run, local_run, model, side = igd_two_stage
    card = load_bundle(model).card
    assert [s.name for s in card.stages] == ["global", "local"]
    assert [s.weight for s in card.stages] == [1.0, 1.0]  # the frame score is their sum
    local = card.stage("local")
    assert (local.tiling.resize_to, local.tiling.tile, local.tiling.stride) == (
        (side, side),
        32,
        16,
    )
    assert local.reduce == "max" and card.stage("global").tiling is None
    assert set(card.training["stages"]) == {"global", "local"}
    frames = load("texture:brick,limit=4").test.images[:3]
    expected = np.zeros(len(frames))
    for run in (global_run, local_run):
        state = load_checkpoint(run / "best.pt")
        batch = prepare_batch(frames, state.frame_spec)
        inputs = grid_tiles(torch.from_numpy(batch), state.stage_plan)
        with torch.no_grad():
            scores = rebuild_scorer(state)(inputs)[0].numpy().reshape(len(frames), -1)
        assert scores.shape[1] == (IGD_PATCHES[side] if run == local_run else 1)
        expected += scores.max(axis=1)  # s = s_G + max over the patch grid
    scores, maps, _ = Detector(model).score_images_with_maps(frames)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
    assert all(m.shape == (128, 128) for m in maps)  # back at the frame's own size


def test_igd_bundle_streams_a_frame(igd_two_stage, monkeypatch, capsys, tmp_path):
    _, _, model, side = igd_two_stage
    batches = record_batches(monkeypatch)
    events = tmp_path / "events.jsonl"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "stream",
        "--model",
        model,
        "--source",
        f"synthetic:texture=brick,size={side},frames=2",
        "--jsonl",
        events,
        "--quiet",
    )
    assert code == 0, err
    assert len(frame_records(events)) == 2
    patches = IGD_PATCHES[side]
    assert batches == [1, patches, 1, patches]  # per frame: the global image, then its patches
