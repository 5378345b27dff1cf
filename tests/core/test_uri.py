"""One URI type for --source and --sink, and one key=value parser for URI options, data specs
and --set (adedge.uri): every documented spelling parses to the same parts, passwords never
reach a message, and the callers' own one-line errors still name what is wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest

from adedge.data import parse_spec
from adedge.errors import AdedgeError, DataError, SourceError
from adedge.runtime.sinks import SinkKind, parse_sink
from adedge.runtime.sources import SYNTHETIC, open_source, parse_csi, parse_synthetic
from adedge.uri import Uri, parse_key_values, parse_uri, redact_url, split_items

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed


@pytest.mark.parametrize(
    ("text", "scheme", "location", "options"),
    [
        ("camera0", "", "camera0", []),
        ("0", "", "0", []),
        ("/dev/video0", "", "/dev/video0", []),
        ("v4l2:///dev/video0", "v4l2", "/dev/video0", []),
        ("csi://0?width=1920&height=1080", "csi", "0", ["width=1920", "height=1080"]),
        ("RTSP://cam:554/s?transport=udp", "rtsp", "cam:554/s", ["transport=udp"]),
        ("https://cam/mjpg", "https", "cam/mjpg", []),
        ("  clip.mp4 ", "", "clip.mp4", []),
        ("file:///data/my%20clip.avi", "file", "/data/my%20clip.avi", []),
        ("./images/*.png", "", "./images/*.png", []),
        ("synthetic", SYNTHETIC, "", []),
        ("synthetic:seed=1, size=256,", SYNTHETIC, "", ["seed=1", "size=256"]),
        ("display://0", "display", "0", []),
        ("jsonl://", "jsonl", "", []),
        ("-", "", "-", []),
        ("my:clip.mp4", "", "my:clip.mp4", []),  # a colon alone makes no scheme
    ],
)
def test_documented_spellings_parse(text, scheme, location, options):
    uri = parse_uri(text, named=(SYNTHETIC,))
    assert (uri.scheme, uri.location, uri.options) == (scheme, location, options)
    assert uri.text == text.strip()


def test_file_uris_name_local_paths():
    assert parse_uri("file:///data/my%20clip.avi").path == "/data/my clip.avi"
    assert parse_uri("file://rel/x.mp4").path == "rel/x.mp4"
    assert parse_uri("file://localhost/abs/x.mp4").path == "/abs/x.mp4"
    assert parse_uri("file:///x.mp4?ignored=1").path == "/x.mp4"
    assert parse_uri("out.jsonl").path == "out.jsonl"
    assert parse_uri("file://").path == ""


def test_a_password_is_never_shown():
    uri = parse_uri("rtsp://admin:secret@10.0.0.2:554/live?transport=udp")
    assert "secret" not in str(uri) and "secret" not in repr(uri) and "secret" not in f"{uri}"
    assert str(uri) == "rtsp://admin:***@10.0.0.2:554/live?transport=udp"
    assert redact_url("rtsp://u:p@ss@cam:notaport/s") == "rtsp://u:***@cam:notaport/s"
    assert redact_url("rtsp://user@cam/s") == "rtsp://user@cam/s"  # no password: as typed
    with pytest.raises(SourceError) as info:
        open_source("ftp://admin:secret@host/x.mp4")
    assert "secret" not in info.value.one_line() and "admin:***@host" in info.value.one_line()
    with pytest.raises(AdedgeError) as info:
        parse_sink("rtp://admin:secret@host:5000")
    assert "secret" not in info.value.one_line() and "not supported" in info.value.one_line()


def test_take_option_keeps_the_rest_as_typed():
    uri = parse_uri("rtsp://u:pw@cam/s?a=%20x&transport=UDP&flag&b=1+2")
    rest, taken = uri.take_option("transport")
    assert taken == ["UDP"]
    assert rest.text == "rtsp://u:pw@cam/s?a=%20x&flag&b=1+2"  # the camera's own, untouched
    alone, _ = parse_uri("rtsp://cam/s?transport=tcp").take_option("transport")
    assert alone.text == "rtsp://cam/s" and alone.options == []
    same, none = parse_uri("rtsp://cam/s?a=1").take_option("transport")
    assert none == [] and same.text == "rtsp://cam/s?a=1"


def test_uri_is_a_frozen_value():
    uri = parse_uri("csi://0")
    with pytest.raises(AttributeError):
        uri.scheme = "rtsp"  # type: ignore[misc]
    assert uri == Uri("csi://0", "csi", "0", "")


# --- key=value --------------------------------------------------------------------------------


def _problem(item: str) -> AdedgeError:
    return AdedgeError(f"'{item}' is not understood")


def test_key_values_strip_and_later_keys_win():
    items = split_items(" a = 1 ,, b=x=y , a=2 ")
    assert items == ["a = 1", "b=x=y", "a=2"]
    assert parse_key_values(items, problem=_problem) == {"a": "2", "b": "x=y"}
    assert parse_key_values(["k="], problem=_problem) == {"k": ""}
    assert parse_key_values(["w=1%2B1"], problem=_problem, decode=None) == {"w": "1%2B1"}
    assert parse_uri("csi://0?w=1%2B1+2").values(_problem) == {"w": "1+1 2"}


@pytest.mark.parametrize(
    ("items", "known"), [(["flag"], None), (["=1"], None), ([""], None), (["zoom=2"], ("width",))]
)
def test_key_value_problems_are_the_callers_errors(items, known):
    with pytest.raises(AdedgeError, match="is not understood"):
        parse_key_values(items, problem=_problem, known=known)


def test_set_items_as_the_train_command_reads_them():
    """``--set KEY=VALUE`` (repeatable: one pair per item, a value may hold commas)."""

    def not_key_value(item: str) -> AdedgeError:
        return AdedgeError(f"--set '{item}' is not KEY=VALUE", "e.g. --set alpha=1e-5")

    items = ["alpha=1e-5", " milestones = 10,20 "]
    assert parse_key_values(items, problem=not_key_value) == {
        "alpha": "1e-5",
        "milestones": "10,20",
    }
    for bad in ("alpha", "=1", ""):
        with pytest.raises(AdedgeError, match="is not KEY=VALUE"):
            parse_key_values([bad], problem=not_key_value)


def test_the_four_callers_share_the_parser():
    assert parse_synthetic("synthetic: seed=3 ,size=32x16").seed == 3
    assert parse_csi("csi://1?width=640&height=480").width == 640
    assert parse_spec("digits:anomaly=3, seed=2")[1].seed == 2
    assert parse_spec("texture:brick,frame=64")[1].texture == "brick"
    with pytest.raises(SourceError, match="synthetic option 'colour=red'"):
        parse_synthetic("synthetic:colour=red")
    with pytest.raises(SourceError, match="option 'width' is not understood"):
        parse_csi("csi://0?width")
    with pytest.raises(DataError, match="data option 'anomaly' in 'digits:anomaly'"):
        parse_spec("digits:anomaly")


# --- sources and sinks on the parser ------------------------------------------------------------


def test_truth_is_given_when_the_source_opens(digit_folder):
    source = open_source(str(digit_folder), truth={1: True, 2: False}, max_frames=3)
    assert [frame.truth for frame in source] == [None, True, False]
    scene = open_source("synthetic:size=32,frames=6", truth={0: True, 5: False})
    assert [frame.truth for frame in scene] == [False, False, False, False, False, True]


def test_options_on_a_device_path_are_refused():
    with pytest.raises(SourceError) as info:
        open_source("v4l2:///dev/video9?width=640")
    assert "takes no options (?width=640)" in info.value.one_line()


def test_sink_spellings_on_the_parser():
    assert parse_sink("-").kind is SinkKind.JSONL
    assert parse_sink(" file:///tmp/a%20b.mkv ").target == "/tmp/a b.mkv"
    with pytest.raises(AdedgeError, match="display number"):
        parse_sink("display://0?fullscreen=1")


def test_the_module_imports_nothing_heavy():
    code = (
        "import sys, adedge.uri; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'numpy', 'cv2', 'onnxruntime', 'onnx', 'torch', 'typer', 'rich'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_take_option_on_named_options():
    uri = parse_uri("synthetic:seed=1,size=64", named=(SYNTHETIC,))
    rest, taken = uri.take_option("seed")
    assert taken == ["1"] and rest.text == "synthetic:size=64" and rest.options == ["size=64"]
    alone, _ = rest.take_option("size")
    assert alone.text == "synthetic" and alone.query == ""
