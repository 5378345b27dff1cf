"""Tiled methods end to end on a real texture: train, export, evaluate and stream.

CBiGAN's texture mode (DESIGN §3: the runtime tiles each frame and takes the max over tile
scores) on scikit-image's real brick photograph with synthetic defects: the card declares the
tiling, the runtime scores all of a frame's tiles in one batch, and a short run already
ranks defective frames above clean ones.
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
from adedge.export.onnx_export import ExportOptions, export_bundle, rebuild_scorer
from adedge.metrics import auroc
from adedge.preprocess import InputSpec, prepare_batch
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
    batch = torch.from_numpy(prepare_batch(frames, InputSpec.from_dict(state["frame_spec"])))
    plan = load_bundle(model).card.stages[0]
    tiles = grid_tiles(batch, _plan_of(state))
    with torch.no_grad():
        tile_scores = rebuild_scorer(state)(tiles)[0].numpy().reshape(len(frames), -1)
    scores, maps, _ = Detector(model).score_images_with_maps(frames)
    assert tile_scores.shape[1] == plan_tiles((128, 128), plan.tiling).count == 16
    np.testing.assert_allclose(scores, tile_scores.max(axis=1), rtol=1e-4, atol=1e-5)
    assert all(m.shape == (128, 128) and m.dtype == np.float32 for m in maps)


def _plan_of(state):
    from adedge.export.onnx_export import stage_plan_of

    return stage_plan_of(state)


def test_short_run_ranks_defective_frames_above_clean(cbigan_brick):
    """A conservative floor after two tiny epochs: defects (held-out region) score higher."""
    _, model = cbigan_brick
    test = load(BRICK).test
    detector = Detector(model)
    scores, maps, _ = detector.score_images_with_maps(test.images)
    assert auroc(test.labels, scores) > 0.75
    assert scores[test.labels == 1].mean() > scores[test.labels == 0].mean()
    # the heatmap is higher on defect pixels than on clean pixels of the same frames
    defect = np.concatenate([m[k] for m, k in zip(maps, test.masks, strict=True) if k.any()])
    clean = np.concatenate([m[~k] for m, k in zip(maps, test.masks, strict=True) if k.any()])
    assert defect.mean() > clean.mean()


def test_eval_reports_pixel_auroc(cbigan_brick, monkeypatch, capsys, tmp_path):
    _, model = cbigan_brick
    out = tmp_path / "eval.json"
    code, _, err = run_cli(
        monkeypatch, capsys, "eval", "--model", model, "--data", BRICK, "--out", out
    )
    assert code == 0, err
    result = json.loads(out.read_text())
    assert 0.5 < result["pixel_auroc"] <= 1.0 and result["n_test"] == 80


def test_stream_scores_a_512_frame_as_64_tiles_in_one_batch(
    cbigan_512, monkeypatch, capsys, tmp_path
):
    card = load_bundle(cbigan_512).card
    assert card.stages[0].tiling.resize_to == (512, 512) and card.stages[0].tiling.tile == 64
    batches = record_batches(monkeypatch)
    events = tmp_path / "events.jsonl"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "stream",
        "--model",
        cbigan_512,
        "--source",
        "synthetic:texture=brick,size=512,frames=3",
        "--jsonl",
        events,
        "--quiet",
    )
    assert code == 0, err
    lines = frame_records(events)
    assert len(lines) == 3 and all(np.isfinite(e["score"]) for e in lines)
    assert batches == [64, 64, 64]


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


@pytest.fixture(scope="session")
def igd_two_stage(tmp_path_factory) -> tuple[Path, Path, Path]:
    """IGD tiny on brick at 256 px: a global run and a local run (225 patches), one bundle."""
    root = tmp_path_factory.mktemp("igd")
    common = {
        "method": "igd",
        "preset": "tiny",
        "epochs": 1,
        "image_size": 256,
        "monitor_test": False,
    }
    data = "texture:brick,limit=4"
    runs = {}
    for mode in ("global", "local"):
        runs[mode] = root / mode
        train(TrainOptions(data=data, out=runs[mode], mode=mode, **common), **QUIET)
    model = root / "model"
    export_bundle(ExportOptions([runs["global"], runs["local"]], model), **QUIET)
    return runs["global"], runs["local"], model


def test_igd_bundle_sums_a_global_and_a_max_pooled_local_stage(igd_two_stage):
    global_run, local_run, model = igd_two_stage
    card = load_bundle(model).card
    assert [s.name for s in card.stages] == ["global", "local"] and card.combine == "sum"
    local = card.stage("local")
    assert (local.tiling.resize_to, local.tiling.tile, local.tiling.stride) == ((256, 256), 32, 16)
    assert local.reduce == "max" and card.stage("global").tiling is None
    assert set(card.training["stages"]) == {"global", "local"}
    frames = load("texture:brick,limit=4").test.images[:3]
    expected = np.zeros(len(frames))
    for run in (global_run, local_run):
        state = load_checkpoint(run / "best.pt")
        batch = prepare_batch(frames, InputSpec.from_dict(state["frame_spec"]))
        inputs = grid_tiles(torch.from_numpy(batch), _plan_of(state))
        with torch.no_grad():
            scores = rebuild_scorer(state)(inputs)[0].numpy().reshape(len(frames), -1)
        assert scores.shape[1] == (225 if run == local_run else 1)
        expected += scores.max(axis=1)  # s = s_G + max over the 15 x 15 patch grid
    scores, maps, _ = Detector(model).score_images_with_maps(frames)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
    assert all(m.shape == (128, 128) for m in maps)  # back at the frame's own size


def test_igd_bundle_streams_a_256_frame(igd_two_stage, monkeypatch, capsys, tmp_path):
    _, _, model = igd_two_stage
    batches = record_batches(monkeypatch)
    events = tmp_path / "events.jsonl"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "stream",
        "--model",
        model,
        "--source",
        "synthetic:texture=brick,size=256,frames=2",
        "--jsonl",
        events,
        "--quiet",
    )
    assert code == 0, err
    assert len(events.read_text().splitlines()) == 2
    assert batches == [1, 225, 1, 225]  # per frame: the global image, then all 225 patches
