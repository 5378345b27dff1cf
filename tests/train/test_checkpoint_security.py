"""Checkpoints are data, never code (a checkpoint may come from anyone): a crafted .pt file
runs nothing on export or resume, a checkpoint missing fields or damaged is one line, and bad
training settings are refused before any data is loaded."""

import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

from adedge.errors import AdedgeError, CheckpointError
from adedge.train import trainer as trainer_module
from adedge.train.checkpoint import load_checkpoint, save_checkpoint
from adedge.train.trainer import TrainOptions

CRAFTED = "objects other than tensors and plain values"
PLAIN = (str, int, float, bool, type(None))


class Plant:
    """Unpickling this object writes ``path``: the code a crafted checkpoint would run."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __reduce__(self):
        return (Path.write_text, (self.path, "code from a checkpoint ran"))


def our_state(run: Path) -> dict:
    """The payload of one of our own checkpoints, as a plain dict."""
    return load_checkpoint(run / "last.pt", "ygan").to_payload()


def crafted_checkpoint(path: Path, state: dict, marker: Path, legacy: bool = False) -> Path:
    """A complete adedge checkpoint with one object whose unpickling writes ``marker``."""
    evil = {**state, "history": [*state["history"], {"epoch": Plant(marker)}]}
    torch.save(evil, path, _use_new_zipfile_serialization=not legacy)
    return path


def plain_paths(value, where=""):
    """Where ``value`` holds anything but tensors, plain values and plain containers."""
    if type(value) in (dict, OrderedDict):
        found = [f"{where} key {k!r}" for k in value if type(k) not in PLAIN]
        for key, item in value.items():
            found += plain_paths(item, f"{where}.{key}")
        return found
    if type(value) in (list, tuple):
        return [p for i, item in enumerate(value) for p in plain_paths(item, f"{where}[{i}]")]
    if type(value) is torch.Tensor or type(value) in PLAIN:
        return []
    return [f"{where}: {type(value).__name__}"]


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


@pytest.fixture
def no_data_loading(monkeypatch):
    """Fail the test if training loads its data set (checks must come before that)."""

    def load(spec):
        raise AssertionError(f"the data '{spec}' was loaded before the settings were checked")

    monkeypatch.setattr(trainer_module, "load", load)


# --- 1. a crafted checkpoint runs no code ----------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_load_checkpoint_runs_no_code_from_a_crafted_file(trained_run, tmp_path, legacy):
    marker = tmp_path / "MARKER"
    evil = crafted_checkpoint(tmp_path / "evil.pt", our_state(trained_run), marker, legacy)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(evil, "ygan")
    assert not marker.exists(), "unpickling the checkpoint ran its code"
    line = error.value.one_line()
    assert CRAFTED in line and "never runs code" in line and "adedge train" in line, line
    assert "\n" not in line


def test_export_refuses_a_crafted_checkpoint(monkeypatch, capsys, trained_run, tmp_path):
    marker = tmp_path / "MARKER"
    evil = crafted_checkpoint(tmp_path / "evil.pt", our_state(trained_run), marker)
    out = tmp_path / "bundle"
    code, _, err = run_cli(
        monkeypatch, capsys, "export", "--method", "ygan", "--checkpoint", evil, "--out", out
    )
    assert not marker.exists(), "export ran code from the checkpoint"
    assert_one_line_error(code, err, CRAFTED, "evil.pt")
    assert not out.exists()


def test_resume_refuses_a_crafted_last_pt(monkeypatch, capsys, run_copy, tmp_path):
    marker = tmp_path / "MARKER"
    crafted_checkpoint(run_copy / "last.pt", our_state(run_copy), marker)
    before = (run_copy / "last.pt").read_bytes()
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "train",
        "--method",
        "ygan",
        "--data",
        "digits:anomaly=0",
        "--preset",
        "tiny",
        "--out",
        run_copy,
        "--resume",
    )
    assert not marker.exists(), "resume ran code from last.pt"
    assert_one_line_error(code, err, CRAFTED, "last.pt")
    assert (run_copy / "last.pt").read_bytes() == before


def test_our_checkpoints_load_as_weights_only(trained_run):
    """What `adedge train` writes loads with torch's own weights-only unpickler, no extras."""
    for name in ("last.pt", "best.pt"):
        state = torch.load(trained_run / name, map_location="cpu", weights_only=True)
        assert plain_paths(state) == [], name
        assert isinstance(state["torch_version"], str)


def test_save_checkpoint_stores_plain_values(tmp_path):
    """numpy scalars and str/float subclasses become plain values; anything else is a bug."""
    path = tmp_path / "plain.pt"
    save_checkpoint(
        path,
        {
            "labels": {"silhouette": {"2": round(np.float64(0.25), 4)}, "clusters": np.int64(3)},
            "history": [{"val_loss": np.float32(0.5), "ok": np.bool_(True)}],
            "torch_version": torch.__version__,
            "shape": (1, 2),
            "model": torch.nn.Linear(2, 1).state_dict(),
        },
    )
    state = torch.load(path, weights_only=True)
    assert plain_paths(state) == []
    assert state["labels"] == {"silhouette": {"2": 0.25}, "clusters": 3}
    assert state["history"] == [{"val_loss": 0.5, "ok": True}] and state["shape"] == (1, 2)
    assert set(state["model"]) == {"weight", "bias"}
    with pytest.raises(TypeError, match="extra"):
        save_checkpoint(tmp_path / "bad.pt", {"extra": object()})
    assert not (tmp_path / "bad.pt").exists()


def test_a_checkpoint_written_before_plain_values_still_loads(trained_run, tmp_path):
    """Checkpoints of earlier versions held torch's TorchVersion (a str): they still load."""
    state = our_state(trained_run)
    state["torch_version"] = torch.torch_version.TorchVersion("2.5.1")
    torch.save(state, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt", "ygan")
    assert loaded.torch_version == "2.5.1" and type(loaded.torch_version) is str


def test_an_older_checkpoint_with_numpy_numbers_says_train_again(trained_run, tmp_path):
    """Earlier weak-label runs stored numpy floats: not unpickled, the line says re-train."""
    state = our_state(trained_run)
    state["labels"] = {"source": "weak (k-means)", "silhouette": {"2": np.float64(0.3)}}
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "old.pt", "ygan")
    line = error.value.one_line()
    assert "numpy" in line and "older adedge" in line and "train" in line, line


# --- 2. the adedge marker but missing or mistyped fields -------------------------------------


def test_missing_fields_are_named(tmp_path):
    torch.save({"adedge_checkpoint": 1, "method": "ygan"}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "bare.pt", "ygan")
    line = error.value.one_line()
    for field in ("config", "model", "class_names", "input_spec", "data", "epoch", "optimizers"):
        assert field in line, (field, line)
    assert "lacks" in line


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("epoch", "2", ["'epoch'", "str"]),
        ("epoch", True, ["'epoch'", "bool"]),
        ("model", [1, 2], ["'model'", "list"]),
        ("model", {"w": 1.0}, ["'model'", "tensors"]),
        ("class_names", "0123", ["'class_names'"]),
        ("data", {"n_train": 3}, ["'data'", "'data'"]),
        ("config", {"image_size": "32"}, ["config"]),
        ("input_spec", {"height": 32}, ["'input_spec'"]),
        ("stage_plan", {"frame_size": 32, "tiles": 4}, ["'stage_plan'"]),
        ("rng", [1, 2], ["'rng'"]),
        ("method", 3, ["'method'"]),
    ],
)
def test_mistyped_fields_are_named(trained_run, tmp_path, field, value, words):
    state = our_state(trained_run)
    state[field] = value
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "bad.pt")
    line = error.value.one_line()
    for word in words:
        assert word in line, (word, line)


def test_export_of_a_checkpoint_missing_fields_is_one_line(monkeypatch, capsys, tmp_path):
    torch.save({"adedge_checkpoint": 1, "method": "ygan"}, tmp_path / "bare.pt")
    out = tmp_path / "bundle"
    args = ["export", "--method", "ygan", "--checkpoint", tmp_path / "bare.pt", "--out", out]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "bare.pt", "lacks", "config", "model")
    assert not out.exists()


def test_export_of_a_checkpoint_whose_weights_do_not_fit_is_one_line(
    monkeypatch, capsys, tmp_path, trained_run
):
    """Before: a RuntimeError traceback from load_state_dict."""
    state = torch.load(trained_run / "last.pt", weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(3, 1, 1)  # a tensor of another shape
    save_checkpoint(tmp_path / "reshaped.pt", state)
    out = tmp_path / "bundle"
    args = ["export", "--method", "ygan", "--checkpoint", tmp_path / "reshaped.pt", "--out", out]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "reshaped.pt", "weights do not fit", name)
    assert not out.exists()


def test_resume_of_a_checkpoint_missing_fields_is_one_line(monkeypatch, capsys, run_copy):
    torch.save({"adedge_checkpoint": 1, "method": "ygan"}, run_copy / "last.pt")
    args = ["train", "--method", "ygan", "--data", "digits:anomaly=0", "--preset", "tiny"]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--out", run_copy, "--resume")
    assert_one_line_error(code, err, "last.pt", "lacks", "optimizers")


# --- 3. bad training settings: one line, before the data is loaded, no run folder ------------

TRAIN = ["train", "--method", "ygan", "--data", "digits:anomaly=0", "--preset", "tiny"]


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--image-size", "33", ["--image-size 33", "power of two"]),
        ("--image-size", "8", ["--image-size 8", "16"]),
        ("--image-size", "4096", ["--image-size 4096", "1024"]),
        ("--epochs", "0", ["--epochs 0", "at least 1"]),
        ("--epochs", "-3", ["--epochs -3", "at least 1"]),
        ("--batch-size", "0", ["--batch-size 0", "at least 1"]),
        ("--lr", "0", ["--lr 0", "positive"]),
        ("--lr", "-0.001", ["--lr -0.001", "positive"]),
        ("--lr", "nan", ["--lr nan", "positive"]),
        ("--lr", "inf", ["--lr inf", "positive"]),
        ("--threads", "0", ["--threads 0", "at least 1"]),
        ("--checkpoint-minutes", "-1", ["--checkpoint-minutes -1"]),
        ("--checkpoint-minutes", "nan", ["--checkpoint-minutes nan"]),
        ("--seed", "-1", ["--seed -1"]),
    ],
)
def test_bad_training_settings_are_one_line_before_the_data(
    monkeypatch, capsys, tmp_path, no_data_loading, option, value, words
):
    out = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, *TRAIN, "--out", out, option, value)
    assert_one_line_error(code, err, *words)
    assert not out.exists()


@pytest.mark.parametrize(
    "method, extra, words",
    [
        ("igd", ["--mode", "local", "--image-size", "16"], ["igd", "tile <= image_size"]),
        ("cbigan", ["--mode", "texture", "--image-size", "16"], ["cbigan", "tile"]),
        ("cbigan", ["--mode", "stripes"], ["cbigan", "mode"]),
    ],
)
def test_method_specific_settings_are_checked_before_the_data(
    monkeypatch, capsys, tmp_path, no_data_loading, method, extra, words
):
    out = tmp_path / "run"
    args = ["train", "--method", method, "--data", "digits:anomaly=0", "--preset", "tiny"]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--out", out, *extra)
    assert_one_line_error(code, err, "cannot train with this setting", *words)
    assert not out.exists()


def test_train_options_check_themselves(tmp_path):
    with pytest.raises(AdedgeError, match="--epochs 0"):
        TrainOptions("ygan", "digits:anomaly=0", tmp_path / "run", epochs=0)
    with pytest.raises(AdedgeError, match="--image-size 33"):
        TrainOptions("ygan", "digits:anomaly=0", tmp_path / "run", image_size=33)


# --- 4. resume re-validates, and a damaged last.pt is one line -------------------------------


def test_resume_with_a_truncated_last_pt_is_one_line(monkeypatch, capsys, run_copy):
    data = (run_copy / "last.pt").read_bytes()
    (run_copy / "last.pt").write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(monkeypatch, capsys, *TRAIN, "--out", run_copy, "--resume")
    assert_one_line_error(code, err, "last.pt", "cannot be read", "best.pt")


def test_resume_rechecks_the_settings(monkeypatch, capsys, run_copy, no_data_loading):
    code, _, err = run_cli(
        monkeypatch, capsys, *TRAIN, "--out", run_copy, "--resume", "--epochs", "0"
    )
    assert_one_line_error(code, err, "--epochs 0")
    code, _, err = run_cli(
        monkeypatch, capsys, *TRAIN, "--out", run_copy, "--resume", "--image-size", "64"
    )
    assert_one_line_error(code, err, "--resume", "image_size 32", "--image-size 64")
    code, _, err = run_cli(
        monkeypatch, capsys, *TRAIN, "--out", run_copy, "--resume", "--set", "lambda_rec=3"
    )
    assert_one_line_error(code, err, "--resume", "lambda_rec")


def test_resume_refuses_a_run_whose_config_no_longer_fits(monkeypatch, capsys, run_copy):
    state = our_state(run_copy)
    state["config"]["image_size"] = 33
    save_checkpoint(run_copy / "last.pt", state)
    code, _, err = run_cli(monkeypatch, capsys, *TRAIN, "--out", run_copy, "--resume")
    assert_one_line_error(code, err, "last.pt", "its config", "33")


def test_resume_keeps_the_runs_preset(run_copy):
    """A resumed run given no preset keeps (and saves) the one it was trained with."""
    options = TrainOptions("ygan", "digits:anomaly=0", run_copy, epochs=3, resume=True)
    trainer_module.train(options, log=lambda _: None)
    state = load_checkpoint(run_copy / "last.pt", "ygan")
    assert state.epoch == 3 and state.preset == "tiny"
