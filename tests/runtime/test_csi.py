"""Jetson CSI cameras cannot run here: test the GStreamer pipeline we would open, the option
parsing, and the one-line error this OpenCV (no GStreamer) gives."""

import re

import cv2
import pytest

from adedge.errors import SourceError
from adedge.runtime.sources import CsiOptions, csi_pipeline, open_source, parse_csi

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed


def test_default_pipeline_keeps_only_the_newest_frame():
    pipeline = csi_pipeline(parse_csi("csi://0"))
    assert pipeline.startswith("nvarguscamerasrc sensor-id=0 ! ")
    assert "video/x-raw(memory:NVMM), width=1280, height=720, framerate=30/1" in pipeline
    assert "nvvidconv flip-method=0" in pipeline and "format=BGR !" in pipeline
    assert pipeline.endswith("appsink drop=1 max-buffers=1")


def test_options_reach_the_pipeline():
    csi = parse_csi("csi://1?width=1920&height=1080&framerate=60&flip=2")
    assert csi == CsiOptions(sensor=1, width=1920, height=1080, framerate=60, flip=2)
    pipeline = csi_pipeline(csi)
    assert "sensor-id=1" in pipeline and "width=1920, height=1080, framerate=60/1" in pipeline
    assert "flip-method=2" in pipeline
    assert parse_csi("csi://") == CsiOptions()


@pytest.mark.parametrize(
    "spec, words",
    [
        ("csi://x", "csi://SENSOR?width="),
        ("csi://0?zoom=2", "csi://SENSOR?width="),
        ("csi://0?width=wide", "csi://SENSOR?width="),
        ("csi://0?width=0", "out of range"),
        ("csi://0?flip=9", "flip 0-7"),
    ],
)
def test_bad_csi_options_are_one_line_errors(spec, words):
    with pytest.raises(SourceError) as info:
        parse_csi(spec)
    line = info.value.one_line()
    assert "\n" not in line and spec in line and words in line


@pytest.mark.skipif(
    re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()) is not None,
    reason="this OpenCV has GStreamer: the missing-GStreamer error cannot occur",
)
def test_opencv_without_gstreamer_says_what_to_do():
    with pytest.raises(SourceError) as info:
        open_source("csi://0?width=1920&height=1080")
    line = info.value.one_line()
    assert "GStreamer" in line and "JetPack's OpenCV" in line and "\n" not in line
