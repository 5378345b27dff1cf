"""open_pipeline(StreamConfig): every option checked before the model loads, sinks, detector
and source opened in order with nothing written when a later step fails, truth given to the
source when it opens, and every line for a person through the log callable."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from adedge.errors import AdedgeError
from adedge.formats import BackendChoice, BackendKind, Precision
from adedge.outputs import Existing
from adedge.runtime.sinks import SinkKind, SinkSpec
from adedge.runtime.stream.wiring import CheckedStream, StreamConfig, check_stream, open_pipeline

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed

SCENE = "synthetic:size=64,frames=12,seed=2"


@pytest.fixture
def no_model(tmp_path: Path) -> Path:
    """A bundle path that does not exist: a check that ran after the model loaded would
    fail on it instead of naming the option."""
    return tmp_path / "no-such-bundle"


def _bad_truth(tmp_path: Path) -> Path:
    path = tmp_path / "truth.csv"
    path.write_text("index,label\n0,1\n", encoding="utf-8")
    return path


def _existing_summary(tmp_path: Path) -> Path:
    path = tmp_path / "summary.json"
    path.write_text("{}", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"batch": 0}, "batch must be 1 or more"),
        ({"alarm_frames": 0}, "alarm frames must be 1 or more"),
        ({"threshold": math.nan}, "--threshold"),
        ({"threads": -1}, "--threads -1 is negative"),
        ({"backend": "cuda"}, "unknown backend 'cuda'"),
        ({"backend": "tensorrt:int8"}, "has no precision 'int8'"),
        ({"segment_minutes": 0.0}, "--segment-minutes 0.0 is not a positive number"),
        ({"every": 0}, "every=0 is not a positive integer"),
        ({"fps": 0.0}, "fps=0.0 is not positive"),
        ({"max_frames": -1}, "max_frames=-1 is negative"),
        ({"resize": (0, 480)}, "resize 0x480 is outside"),
        ({"sinks": ("out.txt",)}, "not a known file type"),
        ({"sinks": ("a.jsonl", "jsonl://a.jsonl")}, "write the same file"),
        (lambda tmp: {"truth": _bad_truth(tmp)}, "cannot read ground truth"),
        (lambda tmp: {"summary_json": _existing_summary(tmp)}, "already exists"),
    ],
)
def test_every_option_is_checked_before_the_model_loads(tmp_path, no_model, change, words):
    fields = change(tmp_path) if callable(change) else change
    config = StreamConfig(source=SCENE, model=no_model, **fields)
    with pytest.raises(AdedgeError) as info:
        check_stream(config)
    line = info.value.one_line()
    assert words in line and "\n" not in line
    with pytest.raises(AdedgeError) as opened:
        open_pipeline(config, log=lambda _: pytest.fail("nothing to say before the checks pass"))
    assert opened.value.one_line() == line


def test_a_checked_config_keeps_what_it_read(tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_text("frame,anomalous\n0,1\n3,0\n", encoding="utf-8")
    checked = check_stream(
        StreamConfig(
            backend="ONNXRuntime:fp16",
            sinks=("-", "file://v.avi"),
            truth=truth,
            segment_minutes=0.5,
        )
    )
    assert isinstance(checked, CheckedStream)
    assert checked.backend == BackendChoice(BackendKind.ONNXRUNTIME, Precision.FP16)
    assert checked.truth == {0: True, 3: False}
    assert [spec.kind for spec in checked.sinks] == [SinkKind.JSONL, SinkKind.VIDEO]
    assert checked.records_on_stdout and checked.segment_seconds == 30.0
    assert checked.options.drain_on_interrupt  # nothing already scored is lost on Ctrl-C


@pytest.mark.parametrize("failing", ["model", "source"])
def test_nothing_is_written_when_a_later_step_fails(tmp_path, mean_bundle, no_model, failing):
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "frame", "frame": 0}\n', encoding="utf-8")
    before = events.read_bytes()
    config = StreamConfig(
        source="missing.mp4" if failing == "source" else SCENE,
        model=mean_bundle if failing == "source" else no_model,
        sinks=(SinkSpec(SinkKind.JSONL, str(events), "--jsonl"), str(tmp_path / "v.avi")),
        existing=Existing.OVERWRITE,  # even replacing: the file is kept until the stream starts
    )
    with pytest.raises(AdedgeError):
        open_pipeline(config, log=lambda _: None)
    assert events.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl"]


def test_truth_is_set_when_the_source_opens(tmp_path, mean_bundle, digit_folder):
    truth = tmp_path / "truth.csv"
    truth.write_text("frame,anomalous\n1,1\n2,0\n", encoding="utf-8")
    lines: list[str] = []
    pipeline = open_pipeline(
        StreamConfig(source=str(digit_folder), model=mean_bundle, truth=truth, quiet=True),
        log=lines.append,
    )
    assert pipeline.source.truth == {1: True, 2: False}  # given to the constructor
    summary = pipeline.run()
    assert summary.frames_scored == 24
    assert list(pipeline.tally.truths) == [1, 0]


def test_the_pipeline_logs_runs_and_finishes(tmp_path, mean_bundle, capsys):
    events, summary_json = tmp_path / "events.jsonl", tmp_path / "summary.json"
    lines: list[str] = []
    pipeline = open_pipeline(
        StreamConfig(
            source=SCENE,
            model=mean_bundle,
            sinks=(str(events),),
            summary_json=summary_json,
            quiet=True,
        ),
        log=lines.append,
    )
    assert lines[0].startswith("warning: the bundle's method 'mean' is not one")
    assert lines[1:] == [
        f"streaming {pipeline.source.describe()} through {mean_bundle} (mean, onnxruntime)"
    ]
    summary = pipeline.run()
    pipeline.finish(summary)
    assert lines[-1] == f"wrote {events}" and pipeline.written() == [events]
    written = json.loads(summary_json.read_text(encoding="utf-8"))
    assert written["frames_scored"] == 12 and written["detection"]["frames_with_truth"] == 12
    assert capsys.readouterr().err == ""  # the pipeline itself prints nothing to stderr


def test_records_on_stdout_send_the_console_to_stderr(mean_bundle, capsys):
    pipeline = open_pipeline(
        StreamConfig(source=SCENE, model=mean_bundle, sinks=("-",)), log=lambda _: None
    )
    pipeline.run()
    out, err = capsys.readouterr()
    assert all(json.loads(line)["type"] for line in out.splitlines())  # records alone
    assert "ANOMALY" in err or "normal" in err.lower()


def test_close_gives_up_a_pipeline_that_never_ran(tmp_path, mean_bundle):
    events = tmp_path / "events.jsonl"
    events.write_text("kept\n", encoding="utf-8")
    pipeline = open_pipeline(
        StreamConfig(
            source=SCENE, model=mean_bundle, sinks=(str(events),), existing=Existing.OVERWRITE
        ),
        log=lambda _: None,
    )
    pipeline.close()
    assert events.read_text(encoding="utf-8") == "kept\n" and pipeline.source.closed
