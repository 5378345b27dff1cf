"""The `adedge` command line. Training and export import torch lazily, inside their
commands: `adedge stream`, `eval` and `bench` run where torch is not installed.

Importing this package registers every command on :data:`app`: train and export
(:mod:`.train_commands`); eval, stream and video (:mod:`.run_commands`); serve
(:mod:`.serve_commands`); triton-repo (:mod:`.triton_commands`); threshold
(:mod:`.threshold_commands`); bench and the engines
group (:mod:`.bench_commands`). The app, its command classes and :func:`main` are in :mod:`.app`."""

from __future__ import annotations

from adedge.cli.app import app, main

# The commands register in import order, which is the order `adedge --help` lists them in
# (groups after commands): keep these imports in this order.
# isort: off
from adedge.cli.train_commands import parse_overrides, parse_settings, pretrained_help
from adedge.cli import run_commands  # noqa: F401 - registers eval, stream, video
from adedge.cli import serve_commands  # noqa: F401 - registers serve
from adedge.cli import triton_commands  # noqa: F401 - registers triton-repo
from adedge.cli import threshold_commands  # noqa: F401 - registers threshold
from adedge.cli import bench_commands  # noqa: F401 - registers bench, engines build
# isort: on

__all__ = ["app", "main", "parse_overrides", "parse_settings", "pretrained_help"]
