"""The command line: help everywhere, defaults that find the newest run and bundle, and
one clear line (no traceback, exit 2) for each user mistake: a typo should cost a re-type,
not a stack trace to read."""

import json
import shutil

import pytest
from cli_helpers import assert_one_line_error, run_cli
from jsonl_records import frame_records

COMMANDS = ["train", "export", "stream", "eval", "bench", "video"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(monkeypatch, capsys, command):
    code, out, _ = run_cli(monkeypatch, capsys, command, "--help")
    assert code == 0 and "Usage" in out and "--" in out


def test_unknown_method(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "train", "--method", "yolo", "--data", "digits")
    assert_one_line_error(code, err, "unknown method 'yolo'", "ygan")


def test_empty_data_folder(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "train",
        "--method",
        "ygan",
        "--data",
        tmp_path,
        "--out",
        tmp_path / "r",
    )
    assert_one_line_error(code, err, "no images found")


def test_single_normal_class_needs_weak_labels(monkeypatch, capsys, tmp_path):
    import cv2

    from adedge.data import load

    folder = tmp_path / "data" / "good"
    folder.mkdir(parents=True)
    for i, image in enumerate(load("digits:anomaly=0").train.images[:40]):
        cv2.imwrite(str(folder / f"{i}.png"), image)
    args = ["train", "--method", "ygan", "--data", tmp_path / "data", "--preset", "tiny"]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--out", tmp_path / "r1")
    assert_one_line_error(code, err, "single normal class", "--weak-labels")
    code, _, err = run_cli(monkeypatch, capsys, *args, "--out", tmp_path / "r2", "--weak-labels")
    assert code == 0, err
    state = json.loads((tmp_path / "r2" / "run.json").read_text())
    assert state["method"] == "ygan"
    assert (tmp_path / "r2" / "best.pt").is_file()
    # the last line says which epoch best.pt holds and by which rule (Y-GAN: the last)
    assert "best.pt (epoch 1: the last epoch, selection=last)" in err.splitlines()[-1]


def test_checkpoint_of_another_method(monkeypatch, capsys, trained_run, tmp_path):
    import torch

    from adedge.train.checkpoint import save_checkpoint

    state = torch.load(trained_run / "last.pt", weights_only=True)
    state["method"] = "igd"
    save_checkpoint(tmp_path / "igd.pt", state)
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "export",
        "--method",
        "ygan",
        "--checkpoint",
        tmp_path / "igd.pt",
        "--out",
        tmp_path / "m",
    )
    assert_one_line_error(code, err, "igd model, not ygan")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda b: (b / "global.onnx").unlink(), ["missing global.onnx"]),
        (lambda b: (b / "adedge.json").write_text("{not json"), ["not valid JSON"]),
        (
            lambda b: (b / "adedge.json").write_text(
                (b / "adedge.json").read_text().replace('"height": 32', '"height": "32"')
            ),
            ["stages.global.input.height", "wrong type"],
        ),
        (lambda b: (b / "global.onnx").write_bytes(b"truncated"), ["does not match the sha256"]),
    ],
)
def test_damaged_bundle(monkeypatch, capsys, ygan_bundle, tmp_path, damage, words):
    bundle = tmp_path / "bundle"
    shutil.copytree(ygan_bundle, bundle)
    damage(bundle)
    code, _, err = run_cli(
        monkeypatch, capsys, "stream", "--model", bundle, "--source", "synthetic", "--max-frames", 2
    )
    assert_one_line_error(code, err, *words)


def test_source_that_cannot_be_opened(monkeypatch, capsys, ygan_bundle, tmp_path):
    code, _, err = run_cli(
        monkeypatch, capsys, "stream", "--model", ygan_bundle, "--source", tmp_path / "nope.mp4"
    )
    assert_one_line_error(code, err, "nope.mp4")


def test_defaults_pick_the_newest_run_and_bundle(monkeypatch, capsys, trained_run, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    shutil.copytree(trained_run, tmp_path / "runs" / "ygan-test")
    code, _, err = run_cli(monkeypatch, capsys, "export", "--method", "ygan")
    assert code == 0, err
    assert "newest ygan run" in err and "--checkpoint" in err
    assert (tmp_path / "models" / "ygan-test" / "adedge.json").is_file()
    code, out, err = run_cli(
        monkeypatch, capsys, "stream", "--source", "synthetic", "--max-frames", 3
    )
    assert code == 0, err
    assert "newest bundle" in err and "--model" in err and "models/ygan-test" in err


def test_eval_writes_json_and_matches_sklearn(monkeypatch, capsys, ygan_bundle, tmp_path):
    from sklearn.metrics import roc_auc_score

    from adedge.data import load
    from adedge.runtime.detector import Detector

    out = tmp_path / "eval.json"
    code, stdout, err = run_cli(
        monkeypatch,
        capsys,
        "eval",
        "--model",
        ygan_bundle,
        "--data",
        "digits:anomaly=0",
        "--out",
        out,
    )
    assert code == 0, err
    result = json.loads(out.read_text())
    test = load("digits:anomaly=0").test
    scores, _ = Detector(ygan_bundle).score_images(test.images)
    assert result["auroc"] == pytest.approx(roc_auc_score(test.labels, scores), abs=1e-9)
    assert 0.0 <= result["tpr"] <= 1.0 and 0.0 <= result["tnr"] <= 1.0
    assert "auroc" in stdout


def test_bench_prints_rows(monkeypatch, capsys, ygan_bundle, tmp_path):
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "bench",
        "--model",
        ygan_bundle,
        "--batch",
        "1,4",
        "--seconds",
        0.05,
        "--json",
        tmp_path / "b.json",
    )
    assert code == 0, err
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["batch"] for r in rows] == [1, 4]
    assert "2.6 ms" in out


def test_video_of_the_test_split_streams_with_its_ground_truth(
    monkeypatch, capsys, ygan_bundle, tmp_path
):
    """The demo's path: a labelled test split as a real video, streamed end to end."""
    import cv2

    from adedge.runtime.labelled_video import read_truth

    video = tmp_path / "test.avi"
    code, _, err = run_cli(
        monkeypatch, capsys, "video", "--data", "digits:anomaly=0", "--out", video, "--limit", 30
    )
    assert code == 0, err
    truth = read_truth(video.with_suffix(".csv"))
    assert len(truth) == 30 and 0 < sum(truth.values()) < 30
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    capture.release()
    events, annotated = tmp_path / "events.jsonl", tmp_path / "annotated.avi"
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "stream",
        "--model",
        ygan_bundle,
        "--source",
        video,
        "--jsonl",
        events,
        "--save-video",
        annotated,
        "--batch",
        8,
        "--truth",
        video.with_suffix(".csv"),
    )
    assert code == 0, err
    assert "detection on 30 frames with known truth" in out
    lines = frame_records(events)
    assert [line["frame"] for line in lines] == list(range(30))
    assert [int(line["truth"]) for line in lines] == [truth[i] for i in range(30)]
    assert "30 scored" in out
    capture = cv2.VideoCapture(str(annotated))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    capture.release()
    assert not list(tmp_path.glob(".*partial*"))


def test_unreadable_truth_file(monkeypatch, capsys, ygan_bundle, tmp_path):
    (tmp_path / "truth.csv").write_text("a,b\n1,2\n")
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "stream",
        "--model",
        ygan_bundle,
        "--source",
        "synthetic",
        "--max-frames",
        2,
        "--truth",
        tmp_path / "truth.csv",
    )
    assert_one_line_error(code, err, "cannot read ground truth", "frame,anomalous")


def test_missing_option_is_a_usage_error_not_a_traceback(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "train", "--method", "ygan")
    assert code == 2 and "Missing option '--data'" in err and "Traceback" not in err
