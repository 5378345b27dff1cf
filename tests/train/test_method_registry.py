"""A new method is one new file: the registry finds method files without importing them, each
file registers itself (``@register_method``), configs share CommonConfig, and checkpoints are
a typed Checkpoint that still reads the files earlier versions wrote."""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

from adedge import registry
from adedge.bundle import load_bundle
from adedge.data import load
from adedge.errors import AdedgeError
from adedge.export.bundle_writer import export_bundle
from adedge.export.options import ExportOptions
from adedge.runtime.bench.bundle import paper_times
from adedge.runtime.bench.papers import CASES
from adedge.runtime.detector import Detector
from adedge.train.checkpoint import Checkpoint, load_checkpoint
from adedge.train.methods import load_method
from adedge.train.methods.base import REGISTERED, CommonConfig, Method, register_method
from adedge.train.trainer import parse_overrides

TOY_FOLDER = Path(__file__).parents[1] / "toy_methods"
BUILT_IN = ["cbigan", "ddrid", "igd", "panda", "ygan"]


@pytest.fixture
def toy_registry(monkeypatch):
    """The registry also reads tests/toy_methods/ (as if toy.py had been added to adedge's
    methods); nothing else is changed. The toy module is forgotten afterwards."""
    built_in = registry.method_folders()
    toy = registry.MethodFolder("toy_methods", TOY_FOLDER)
    monkeypatch.setattr(registry, "method_folders", lambda: [*built_in, toy])
    monkeypatch.syspath_prepend(str(TOY_FOLDER.parent))
    yield
    REGISTERED.pop("toy", None)
    for name in [m for m in sys.modules if m == "toy_methods" or m.startswith("toy_methods.")]:
        del sys.modules[name]


# --- the registry: names and metadata without importing a method ----------------------------


def test_the_registry_lists_the_method_files():
    assert registry.method_names() == BUILT_IN
    assert registry.get_method("Y-GAN").name == "ygan"


def test_the_registry_reads_what_importing_registers():
    """The decorator's arguments, read from each file's text, are what its import registers."""
    for name in BUILT_IN:
        assert load_method(name).info == registry.get_method(name), name


def test_registrations_carry_what_the_cli_and_bench_used_to_hard_code():
    info = {name: registry.get_method(name) for name in BUILT_IN}
    assert info["ygan"].needs_subclasses and not info["igd"].needs_subclasses
    assert info["panda"].pretrained_field == "perceptual_weights"
    assert "VGG-19" in info["panda"].pretrained_weights
    assert info["igd"].pretrained_field == "backbone_weights"
    assert "ResNet-18" in info["igd"].pretrained_weights
    assert set(info["cbigan"].modes) == {"object", "texture"}
    assert set(info["igd"].modes) == {"global", "local"}
    assert info["ygan"].paper_ms_per_image == {"32x32": 2.6, "256x256": 13.5}
    assert info["panda"].paper_ms_per_image == {"Plant Village PWL (Titan X)": 15.2}
    papers = {case.name: [p.ms for p in case.papers] for case in CASES}
    assert papers["ygan 32x32 grey"] == [2.6] and papers["ygan 256x256 rgb"] == [13.5]
    assert papers["panda 64x64 rgb"][:2] == [15.2, 20.0] and len(papers["panda 64x64 rgb"]) == 10
    assert papers["igd 256x256 rgb global + 225 local patches"] == []


def test_a_registration_must_be_literal_and_named_as_its_file(tmp_path):
    folder = registry.MethodFolder("nowhere", tmp_path)
    (tmp_path / "odd.py").write_text(
        'TITLE = "x"\n\n\n@register_method(name="odd", title=TITLE, paper="p")\nclass Odd: ...\n'
    )
    with pytest.raises(registry.MethodFileError, match="literal values.*TITLE"):
        registry.discover((folder,))
    (tmp_path / "odd.py").write_text('@register_method(name="even", title="t", paper="p")\n')
    with pytest.raises(registry.MethodFileError, match="file name"):
        registry.discover((folder,))
    (tmp_path / "odd.py").write_text("def register_method(**kwargs): ...\n")  # a helper file
    assert registry.discover((folder,)) == {}


def test_registering_checks_the_class_against_its_declaration():
    @dataclass
    class Loose:
        image_size: int = 16

    @dataclass
    class Moded(CommonConfig):
        image_size: int = 16
        channels: int = 1
        epochs: int = 1
        batch_size: int = 8
        lr: float = 1e-3
        mode: str = "a"

    def declare(config, **extra):
        class Broken(Method):
            config_type = config
            presets = {"paper": {}}

        return register_method(name="broken", title="t", paper="p", **extra)(Broken)

    with pytest.raises(TypeError, match="CommonConfig"):
        declare(Loose)
    with pytest.raises(TypeError, match="modes"):
        declare(Moded)  # a mode field, but no modes declared
    with pytest.raises(TypeError, match="default mode"):
        declare(Moded, modes={"b": "another"})
    with pytest.raises(TypeError, match="no config field"):
        declare(Moded, modes={"a": "one"}, pretrained_field="weights", pretrained_weights="w")
    assert "broken" not in REGISTERED


# --- configs: one common base, no setting dropped --------------------------------------------


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_config_extends_common_config_and_refuses_unknown_fields(name):
    method = load_method(name)
    assert issubclass(method.config_type, CommonConfig)
    common = [f.name for f in fields(CommonConfig)]
    assert [f.name for f in fields(method.config_type)][: len(common)] == common
    with pytest.raises(TypeError, match="no field nonsense"):
        method.make_config("tiny", nonsense=1)
    with pytest.raises(TypeError, match="no field nonsense"):
        method.make_config("tiny", nonsense=None)  # None is "the preset's", still no field
    with pytest.raises(AdedgeError, match="no field 'nonsense'"):
        parse_overrides(method.config_type, {"nonsense": "1"})


def test_set_parses_list_and_tuple_fields():
    panda, ddrid = load_method("panda"), load_method("ddrid")
    blocks = parse_overrides(panda.config_type, {"backbone_blocks": "2, 2,2,2"})
    assert blocks == {"backbone_blocks": (2, 2, 2, 2)}
    assert parse_overrides(ddrid.config_type, {"disc_widths": "16,8"}) == {"disc_widths": [16, 8]}
    with pytest.raises(AdedgeError, match="not a valid int"):
        parse_overrides(ddrid.config_type, {"disc_widths": "16,x"})


def test_set_of_an_unknown_field_is_one_line(monkeypatch, capsys, tmp_path):
    args = ["train", "--method", "cbigan", "--data", "digits:anomaly=0", "--preset", "tiny"]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--out", tmp_path / "r", "--set", "alfa=1")
    assert_one_line_error(code, err, "no field 'alfa'", "alpha")
    assert not (tmp_path / "r").exists()


def test_backbone_weights_go_to_the_registered_field(monkeypatch, capsys, tmp_path):
    from adedge.cli import parse_settings, pretrained_help

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    assert parse_settings([], weights, "panda") == {"perceptual_weights": str(weights.resolve())}
    assert parse_settings([], weights, "igd") == {"backbone_weights": str(weights.resolve())}
    with pytest.raises(AdedgeError, match="ygan uses no pretrained weights"):
        parse_settings([], weights, "ygan")
    with pytest.raises(AdedgeError, match="is not a file") as error:
        parse_settings([], tmp_path / "missing.pt", "panda")
    assert "VGG-19" in error.value.one_line() and "ResNet" not in error.value.one_line()
    assert "panda: a VGG-19" in pretrained_help() and "igd: a ResNet-18" in pretrained_help()


# --- a toy method, registered only by its own file -------------------------------------------


def test_a_new_method_is_one_file(toy_registry, monkeypatch, capsys, tmp_path):
    """tests/toy_methods/toy.py trains through the real trainer and exports through the real
    exporter, via the CLI; the registry lists it, and its registration reaches the card."""
    from adedge.cli import pretrained_help

    assert "toy" in registry.method_names()
    assert "toy: a ToyNet state dict" in pretrained_help()
    code, _, err = run_cli(monkeypatch, capsys, "train", "--method", "nosuch", "--data", "x")
    assert_one_line_error(code, err, "unknown method 'nosuch'", "toy")

    run, bundle = tmp_path / "run", tmp_path / "bundle"
    train = ["train", "--method", "toy", "--data", "digits:anomaly=0", "--preset", "tiny"]
    code, _, err = run_cli(monkeypatch, capsys, *train, "--image-size", "16", "--out", run)
    assert code == 0, err
    assert "training Toy: a one-layer auto-encoder" in err
    assert "L_rec" in err.splitlines()[-2]  # the epoch line shows the headline loss
    checkpoint = load_checkpoint(run, "toy")
    assert checkpoint.config["width"] == 2 and checkpoint.stage_plan.frame_size == 16

    code, _, err = run_cli(
        monkeypatch, capsys, "export", "--method", "toy", "--checkpoint", run, "--out", bundle
    )
    assert code == 0, err
    card = load_bundle(bundle).card
    assert card.method == "toy" and card.training["config"]["width"] == 2
    assert card.training["paper_ms_per_image"] == {"16x16": 1.5}
    assert card.metrics["parity"]["global"]["max_abs_diff"] <= 1e-4
    scores, _ = Detector(bundle).score_images(load("digits:anomaly=0").test.images[:8])
    assert scores.shape == (8,) and np.isfinite(scores).all()

    code, out, err = run_cli(
        monkeypatch, capsys, "bench", "--model", bundle, "--batch", "1", "--seconds", "0.05"
    )
    assert code == 0, err
    assert "paper's reported per-image time" in out and "16x16: 1.5 ms" in out


def test_bench_quotes_paper_times_from_the_card_only():
    assert paper_times({"paper_ms_per_image": {"32x32": 2.6}}) == {"32x32": 2.6}
    assert paper_times({}) is None  # a card written before export carried them
    assert paper_times({"paper_ms_per_image": {"32x32": "fast"}}) is None


# --- checkpoints: typed, and the files of today's (and earlier) format still read -----------

TODAY_KEYS = {
    "adedge_checkpoint",
    "method",
    "config",
    "preset",
    "input_spec",
    "frame_spec",
    "stage_plan",
    "class_names",
    "labels",
    "data",
    "model",
    "optimizers",
    "epoch",
    "step_in_epoch",
    "loss_sums",
    "loss_count",
    "history",
    "best_val",
    "epoch_seconds",
    "rng",
    "saved",
    "adedge_version",
    "torch_version",
}
GREY_32 = {
    "height": 32,
    "width": 32,
    "colour": "gray",
    "mean": [0.5],
    "std": [0.5],
    "resize": "area-down-linear-up",
    "channels": 1,
}


def todays_payload(run: Path) -> dict:
    """A best.pt as the trainer wrote it before Checkpoint existed, field by field."""
    raw = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    return {
        "adedge_checkpoint": 1,
        "method": "ygan",
        "config": dict(raw["config"]),
        "preset": "tiny",
        "input_spec": dict(GREY_32),
        "frame_spec": dict(GREY_32),
        "stage_plan": {
            "frame_size": 32,
            "name": "global",
            "tile": None,
            "stride": None,
            "padding": "reflect",
            "reduce": "max",
            "weight": 1.0,
            "view": {"crop": None, "rotation_degrees": 0.0, "hflip": False},
        },
        "class_names": [str(d) for d in range(1, 10)],
        "labels": {"source": "ground truth sub-classes"},
        "data": dict(raw["data"]),
        "model": raw["model"],
        "optimizers": raw["optimizers"],
        "epoch": raw["epoch"],
        "step_in_epoch": 0,
        "loss_sums": {},
        "loss_count": 0,
        "history": raw["history"],
        "best_val": raw["best_val"],
        "epoch_seconds": 0.0,
        "rng": torch.get_rng_state(),
        "saved": "2026-01-01T00:00:00+00:00",
        "adedge_version": "0.1.0",
        "torch_version": "2.13.0",
    }


def test_the_trainer_writes_todays_keys(trained_run):
    raw = torch.load(trained_run / "last.pt", map_location="cpu", weights_only=True)
    assert set(raw) == TODAY_KEYS
    assert (
        raw["input_spec"] == GREY_32
        and raw["stage_plan"] == todays_payload(trained_run)["stage_plan"]
    )


def test_a_checkpoint_in_todays_format_still_exports(trained_run, ygan_bundle, tmp_path):
    torch.save(todays_payload(trained_run), tmp_path / "today.pt")
    checkpoint = load_checkpoint(tmp_path / "today.pt", "ygan")
    assert isinstance(checkpoint, Checkpoint) and checkpoint.data_spec == "digits:anomaly=0"
    assert set(checkpoint.to_payload()) == TODAY_KEYS
    out = export_bundle(ExportOptions(tmp_path / "today.pt", tmp_path / "bundle"), log=print)
    images = load("digits:anomaly=0").test.images[:32]
    ours, _ = Detector(out).score_images(images)
    reference, _ = Detector(ygan_bundle).score_images(images)  # the same weights, exported
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6)


def test_a_checkpoint_of_an_earlier_version_reads_as_one_whole_image_stage(trained_run, tmp_path):
    """Before tiled stages, checkpoints had no frame_spec, stage_plan or epoch_seconds."""
    payload = todays_payload(trained_run)
    for key in ("frame_spec", "stage_plan", "epoch_seconds", "preset", "labels"):
        del payload[key]
    torch.save(payload, tmp_path / "old.pt")
    checkpoint = load_checkpoint(tmp_path / "old.pt")
    assert checkpoint.frame_spec == checkpoint.input_spec
    assert checkpoint.stage_plan.name == "global" and checkpoint.stage_plan.frame_size == 32
    assert not checkpoint.stage_plan.tiled and checkpoint.epoch_seconds == 0.0
    assert checkpoint.preset is None and checkpoint.labels is None


def test_a_checkpoint_round_trips_through_its_payload(trained_run, tmp_path):
    from adedge.train.checkpoint import OPTIONAL, REQUIRED

    assert set(REQUIRED) | set(OPTIONAL) <= {f.name for f in fields(Checkpoint)}
    checkpoint = load_checkpoint(trained_run / "last.pt")
    checkpoint.save(tmp_path / "again.pt")
    again = load_checkpoint(tmp_path / "again.pt")
    for field in fields(Checkpoint):
        if field.name in ("path", "model", "rng", "optimizers"):
            continue
        assert getattr(again, field.name) == getattr(checkpoint, field.name), field.name
    assert torch.equal(again.rng, checkpoint.rng)
    assert all(torch.equal(again.model[k], v) for k, v in checkpoint.model.items())
