"""Moved to :mod:`adedge.runtime.labelled_video` (this name stays for one release)."""

from adedge.runtime.labelled_video import (  # noqa: F401
    CODECS,
    interleave,
    read_truth,
    render_test_split,
    video_codec,
    video_writer,
)
