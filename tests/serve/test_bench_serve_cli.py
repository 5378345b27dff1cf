"""`adedge bench --serve` as a user runs it: a real service process and real `adedge stream`
processes on a tiny tiled bundle, the table on stdout and the JSON with every field; bad
options are one line and exit 2; the goal is judged only where it applies. Behaviour only:
the numbers are whatever this machine gives (speed lives in benchmarks/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bundles import write_tile_bundle
from cli_helpers import assert_one_line_error, run_cli

from adedge.bundle import TilingSpec
from adedge.runtime.bench.serve import (
    BenchModel,
    ServeBenchReport,
    ServeBenchRow,
    bench_model,
    render_markdown,
)
from adedge.runtime.bench.serve_runs import RunSettings, SideResult

pytestmark = pytest.mark.runtime

ROW_FIELDS = {
    "model", "kind", "source", "cameras", "service_fps", "processes_fps", "ratio",
    "service_min_fps", "service_max_fps", "service_fairness", "processes_min_fps",
    "processes_max_fps", "processes_fairness", "service_p99_ms", "processes_p99_ms",
    "service_rss_mb", "processes_rss_mb", "service_per_camera_fps",
    "processes_per_camera_fps", "goal_applies", "meets_goal",
}  # fmt: skip


@pytest.fixture(scope="module")
def tiled_bundle(tmp_path_factory):
    """A tiny tiled bundle: 128x128 frames cut into 16 tiles of 32 px (brightest pixel)."""
    folder = tmp_path_factory.mktemp("bundle") / "tiny-tiled"
    return write_tile_bundle(folder, TilingSpec((128, 128), 32, 32))


def test_bench_serve_writes_the_table_and_every_field_of_the_json(
    tiled_bundle, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "serve.json"
    code, stdout, err = run_cli(
        monkeypatch, capsys, "bench", "--serve", "--tiled-model", tiled_bundle,
        "--cameras", "1,2", "--sources", "texture", "--seconds", "1", "--warmup", "0.2",
        "--threads", "1", "--json", out,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out.read_text())
    assert [(row["kind"], row["source"], row["cameras"]) for row in report["rows"]] == [
        ("tiled", "texture", 1),
        ("tiled", "texture", 2),
    ]
    for row in report["rows"]:
        assert set(row) == ROW_FIELDS
        n = row["cameras"]
        assert len(row["service_per_camera_fps"]) == len(row["processes_per_camera_fps"]) == n
        assert row["service_fps"] == pytest.approx(sum(row["service_per_camera_fps"]))
        assert row["processes_fps"] == pytest.approx(sum(row["processes_per_camera_fps"]))
        if row["processes_fps"] > 0:
            assert row["ratio"] == pytest.approx(row["service_fps"] / row["processes_fps"])
        assert row["service_rss_mb"] > 0 and row["processes_rss_mb"] > 0
        assert row["goal_applies"] is False and row["meets_goal"] is None  # N < 4
    assert report["models"] == [{"name": "tiny-tiled", "path": str(tiled_bundle), "kind": "tiled"}]
    assert report["settings"]["seconds"] == 1.0 and report["machine"]["nproc"] >= 1
    assert report["goal"].startswith("tiled model, N >= 4")
    table = [line for line in stdout.splitlines() if line.startswith("| tiled | texture |")]
    assert [line.split("|")[3].strip() for line in table] == ["1", "2"]
    assert "| service fps | processes fps | ratio |" in stdout
    assert f"wrote {out}" in err


@pytest.mark.parametrize(
    ("options", "names"),
    [
        (["--cameras", "0"], "--cameras"),
        (["--cameras", "1,x"], "--cameras"),
        (["--sources", "webcam"], "--sources"),
        (["--seconds", "0"], "--seconds"),
        (["--warmup", "-1"], "--warmup"),
        (["--max-batch", "0"], "--max-batch"),
        (["--papers"], "--papers"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(options, names, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "bench", "--serve", *options)
    assert_one_line_error(code, err, names)


def test_a_missing_bundle_is_one_line_before_anything_runs(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "bench", "--serve", "--model", tmp_path / "nothing")
    assert_one_line_error(code, err)


def test_the_model_kind_comes_from_the_card(tiled_bundle, tmp_path):
    whole = write_tile_bundle(tmp_path / "whole", None)
    assert bench_model(whole).kind == "whole-frame"
    assert bench_model(tiled_bundle).kind == "tiled"


def side(*fps: float) -> SideResult:
    return SideResult(list(fps), 50.0, 100.0)


@pytest.mark.parametrize(
    ("tiled", "cameras", "service", "processes", "meets"),
    [
        (True, 4, side(5, 5, 5, 4.5), side(4, 4, 4, 4), True),
        (True, 4, side(8, 8, 8, 2), side(4, 4, 4, 4), False),  # faster, but unfair
        (True, 8, side(*[1.0] * 8), side(*[2.0] * 8), False),  # fair, but slower
        (True, 2, side(9, 9), side(4, 4), None),  # N < 4: the goal does not apply
        (False, 8, side(*[9.0] * 8), side(*[1.0] * 8), None),  # whole-frame
    ],
)
def test_the_goal_is_judged_only_where_it_applies(tiled, cameras, service, processes, meets):
    model = BenchModel("m", Path("m"), tiled)
    row = ServeBenchRow(model, "texture", cameras, service, processes)
    assert row.meets_goal is meets
    report = ServeBenchReport({"nproc": 2, "cpu": "cpu"}, RunSettings(), [model], [row])
    last = render_markdown(report).splitlines()[-3]
    assert last.endswith({True: "| met |", False: "| not met |", None: "| n/a |"}[meets])
