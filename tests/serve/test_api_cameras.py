"""``/api/cameras`` against a real service: a real uvicorn on a free port of 127.0.0.1, asked
with httpx, scoring the scenes' videos (a dim surface scoring ~0.16, a bright defect
scoring 1.0, threshold 0.5 from the card).

What the console relies on: the cameras' fields, a threshold changed at run time changing
the service's decisions and outliving a restart, a refused alarm rule, the newest frame as
a JPEG, the MJPEG stream (parsed part by part as a browser would), and the scores and their
histogram agreeing with the frames scored."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import WAIT_S, wait_until
from live_parts import Part, decode, split_parts
from serve_scenes import SIDE, camera, running_service, service_config, write_scene

from adedge.runtime.serve.live_view import MJPEG_MEDIA_TYPE, live_size

pytestmark = pytest.mark.runtime

API = {"enabled": True, "port": 0}
LIVE_HW = live_size((SIDE, SIDE))


def client(service: Any) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{service.api.port}", timeout=WAIT_S)


@pytest.fixture
def looping(tmp_path: Path, bundle: Path) -> Iterator[tuple[Any, httpx.Client]]:
    """A service with one looping camera (defects on frames 10-19 of 30) and one whose
    detection is off (it reads frames and scores none)."""
    video = write_scene(tmp_path / "loop.avi", 30, range(10, 20))
    cameras = {"line1": camera(video, loop=True), "idle": camera(video, loop=True, detect=False)}
    data = service_config(tmp_path, cameras, bundle, api=API)
    with running_service(data) as service, client(service) as http:
        yield service, http


def camera_json(http: httpx.Client, name: str) -> dict[str, Any]:
    answer = http.get(f"/api/cameras/{name}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def one_line_detail(answer: httpx.Response) -> str:
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail, detail
    return detail


def test_cameras_list_and_detail(looping: tuple[Any, httpx.Client]) -> None:
    service, http = looping
    wait_until(lambda: camera_json(http, "line1")["frames_scored"] > 0, what="a scored frame")
    cameras = http.get("/api/cameras").json()
    assert [c["name"] for c in cameras] == ["line1", "idle"]
    line1 = camera_json(http, "line1")
    assert line1["model"] == "bright" and line1["enabled"] and line1["detect"]
    assert line1["threshold"] == pytest.approx(0.5) and line1["threshold_source"] == "card"
    assert line1["card_threshold"] == pytest.approx(0.5)
    assert line1["alarm_rule"]["k"] == 2 and line1["alarm_rule"]["n"] == 3
    assert line1["has_heatmap"] is True and line1["state"] == "online"
    assert line1["source"].endswith("loop.avi")
    score = line1["latest_score"]
    assert min(abs(score - 40 / 255), abs(score - 1.0)) < 0.02  # the surface or the defect
    idle = camera_json(http, "idle")
    assert idle["detect"] is False and idle["frames_scored"] == 0
    missing = http.get("/api/cameras/nope")
    assert missing.status_code == 404 and "nope" in one_line_detail(missing)


def events_now(http: httpx.Client, name: str) -> tuple[int, bool, int]:
    """(events so far, an event open, frames scored) of camera ``name``, from /api/stats."""
    stats = http.get("/api/stats").json()
    cam = next(c for c in stats["cameras"] if c["name"] == name)
    return cam["events_total"], cam["alarm"], cam["frames_scored"]


def test_a_threshold_set_at_run_time_changes_decisions_and_outlives_a_restart(
    tmp_path: Path, bundle: Path
) -> None:
    video = write_scene(tmp_path / "loop.avi", 30, range(10, 20))
    data = service_config(tmp_path, {"line1": camera(video, loop=True)}, bundle, api=API)
    with running_service(data) as service, client(service) as http:
        wait_until(lambda: events_now(http, "line1")[0] >= 1, what="a first event")
        answer = http.patch("/api/cameras/line1", json={"threshold": 1.5})
        assert answer.status_code == 200, answer.text
        assert answer.json()["threshold"] == 1.5
        assert answer.json()["threshold_source"] == "runtime"
        stats = http.get("/api/stats").json()["cameras"][0]
        assert stats["threshold"] == 1.5
        wait_until(lambda: not events_now(http, "line1")[1], what="the open event to end")
        events, _, scored = events_now(http, "line1")
        # two whole loops of the scene (each with 10 defect frames scoring 1.0) later...
        wait_until(lambda: events_now(http, "line1")[2] >= scored + 60, what="two more loops")
        assert events_now(http, "line1")[0] == events  # ...no new event
        points = http.get("/api/cameras/line1/scores").json()["points"]
        assert any(p["score"] > 0.9 and not p["alarm"] for p in points)  # scored, no alarm
    with running_service(data) as again, client(again) as http:
        line1 = camera_json(http, "line1")
        assert line1["threshold"] == 1.5 and line1["threshold_source"] == "runtime"
        cleared = http.patch("/api/cameras/line1", json={"clear_threshold": True})
        assert cleared.status_code == 200, cleared.text
        assert cleared.json()["threshold"] == pytest.approx(0.5)
        assert cleared.json()["threshold_source"] == "card"


def test_a_patch_that_cannot_hold_is_refused_in_one_line(
    looping: tuple[Any, httpx.Client],
) -> None:
    _, http = looping
    too_many = http.patch("/api/cameras/line1", json={"alarm": {"k": 5}})  # n is 3
    assert too_many.status_code in (409, 422), too_many.text
    assert "k" in one_line_detail(too_many)
    assert camera_json(http, "line1")["alarm_rule"]["k"] == 2  # unchanged
    assert http.patch("/api/cameras/line1", json={"alarm": {"k": 0}}).status_code == 422
    assert http.patch("/api/cameras/line1", json={"colour": "red"}).status_code == 422
    assert http.patch("/api/cameras/nope", json={"detect": False}).status_code == 404
    rule = http.patch("/api/cameras/line1", json={"alarm": {"k": 3, "n": 4}})
    assert rule.status_code == 200, rule.text
    assert rule.json()["alarm_rule"]["k"] == 3 and rule.json()["alarm_rule"]["n"] == 4
    off = http.patch("/api/cameras/line1", json={"detect": False})
    assert off.status_code == 200 and off.json()["detect"] is False


def test_latest_jpeg_is_the_newest_scored_frame(looping: tuple[Any, httpx.Client]) -> None:
    _, http = looping
    wait_until(lambda: camera_json(http, "line1")["frames_scored"] > 0, what="a scored frame")
    for overlay in ("heatmap", "none"):
        answer = http.get("/api/cameras/line1/latest.jpg", params={"overlay": overlay})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "image/jpeg"
        assert answer.headers["cache-control"] == "no-store"
        assert decode(answer.content).shape[:2] == LIVE_HW
    nothing = http.get("/api/cameras/idle/latest.jpg")  # detection off: nothing scored
    assert nothing.status_code == 404 and "no frame" in one_line_detail(nothing)
    assert http.get("/api/cameras/line1/latest.jpg?overlay=x").status_code == 422


def read_parts(http: httpx.Client, url: str, count: int) -> tuple[httpx.Headers, list[Part]]:
    """The first ``count`` parts of an MJPEG stream, then the connection is closed."""
    with http.stream("GET", url) as answer:
        assert answer.status_code == 200
        data = b""
        for chunk in answer.iter_bytes():
            data += chunk
            parts, _ = split_parts(data)
            if len(parts) >= count:
                return answer.headers, parts[:count]
    raise AssertionError(f"the stream ended after {len(split_parts(data)[0])} parts")


def test_the_mjpeg_stream_sends_each_new_frame_once(looping: tuple[Any, httpx.Client]) -> None:
    _, http = looping
    wait_until(lambda: camera_json(http, "line1")["frames_scored"] > 0, what="a scored frame")
    before = camera_json(http, "line1")["frames_scored"]
    # 20 parts at 15/s span more than a loop of the scene (30 frames at 25 fps): the
    # defect comes and goes in them
    headers, parts = read_parts(http, "/api/cameras/line1/stream.mjpeg?fps=15", 20)
    after = camera_json(http, "line1")["frames_scored"]
    assert headers["content-type"] == MJPEG_MEDIA_TYPE
    assert headers["cache-control"] == "no-store"
    seqs = [part.seq for part in parts]
    assert seqs == sorted(set(seqs))  # each part a frame newer than the last
    assert before - 1 <= seqs[0] and seqs[-1] <= after  # no more parts than frames scored
    assert len({part.jpeg for part in parts}) >= 2  # the picture changes
    for part in parts:
        assert decode(part.jpeg).shape[:2] == LIVE_HW
    _, again = read_parts(http, "/api/cameras/line1/stream.mjpeg?overlay=none", 1)
    assert decode(again[0].jpeg).shape[:2] == LIVE_HW  # the first stream's end left it serving
    assert http.get("/api/cameras/nope/stream.mjpeg").status_code == 404
    assert http.get("/api/cameras/line1/stream.mjpeg?fps=0").status_code == 422


def test_many_open_streams_leave_the_api_answering(looping: tuple[Any, httpx.Client]) -> None:
    """45 streams open at once, more than the 40 worker threads the plain endpoints share:
    each gets its first part and the API still answers (a stream waits on the event loop)."""
    service, _ = looping
    limits = httpx.Limits(max_connections=64)
    with (
        client(service) as http,
        httpx.Client(base_url=http.base_url, timeout=WAIT_S, limits=limits) as streams,
        contextlib.ExitStack() as open_streams,
    ):
        wait_until(lambda: camera_json(http, "line1")["frames_scored"] > 0, what="a frame")
        for _ in range(45):
            answer = open_streams.enter_context(
                streams.stream("GET", "/api/cameras/line1/stream.mjpeg?fps=1")
            )
            assert next(answer.iter_bytes()).startswith(b"--frame")
        assert http.get("/api/cameras").status_code == 200
        assert http.get("/api/stats").status_code == 200


def test_a_stream_ends_when_the_service_stops(tmp_path: Path, bundle: Path) -> None:
    video = write_scene(tmp_path / "loop.avi", 30, range(10, 20))
    data = service_config(tmp_path, {"line1": camera(video, loop=True)}, bundle, api=API)
    ended = threading.Event()
    with running_service(data) as service, client(service) as http:
        wait_until(lambda: camera_json(http, "line1")["frames_scored"] > 0, what="a frame")

        def watch() -> None:
            try:
                with http.stream("GET", "/api/cameras/line1/stream.mjpeg") as answer:
                    for _ in answer.iter_bytes():
                        pass
            except httpx.HTTPError:
                pass  # the server closed the connection: ended too
            ended.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        wait_until(lambda: camera_json(http, "line1")["frames_scored"] > 0, what="serving")
    assert ended.wait(WAIT_S), "the stream outlived the service"


def test_scores_and_histogram_count_every_frame_scored(tmp_path: Path, bundle: Path) -> None:
    video = write_scene(tmp_path / "once.avi", 40, range(15, 25))
    data = service_config(tmp_path, {"line1": camera(video)}, bundle, api=API)
    with running_service(data) as service, client(service) as http:
        wait_until(lambda: camera_json(http, "line1")["state"] == "ended", what="the file's end")
        scored = camera_json(http, "line1")["frames_scored"]
        history = http.get("/api/cameras/line1/scores", params={"seconds": 600}).json()
        points = history["points"]
        assert history["camera"] == "line1" and history["threshold"] == pytest.approx(0.5)
        assert len(points) == scored == 40
        assert [p["t"] for p in points] == sorted(p["t"] for p in points)
        high = [p for p in points if p["score"] > 0.5]
        assert len(high) == 10 and all(p["score"] == pytest.approx(1.0, abs=0.02) for p in high)
        assert sum(p["alarm"] for p in points) >= 9  # open from the 2nd defect frame on
        histogram = http.get("/api/cameras/line1/histogram", params={"bins": 8}).json()
        assert histogram["camera"] == "line1" and histogram["threshold"] == pytest.approx(0.5)
        assert len(histogram["edges"]) == 9
        assert len(histogram["normal"]) == len(histogram["alarm"]) == 8
        assert sum(histogram["normal"]) + sum(histogram["alarm"]) == 40
        assert sum(histogram["alarm"]) == sum(p["alarm"] for p in points)
        assert histogram["edges"][0] <= 40 / 255 + 0.02 and histogram["edges"][-1] >= 0.98
        recent = http.get("/api/cameras/line1/scores", params={"seconds": 0.001}).json()
        assert len(recent["points"]) < 40
        assert http.get("/api/cameras/nope/scores").status_code == 404
        assert http.get("/api/cameras/line1/histogram?bins=0").status_code == 422
