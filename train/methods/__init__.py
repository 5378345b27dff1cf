"""One file per method. ``load_method(name)`` imports the file the registry names."""

from __future__ import annotations

import importlib

from adedge.registry import get_method
from adedge.train.methods.base import Method


def load_method(name: str) -> Method:
    info = get_method(name)
    module = importlib.import_module(info.module)
    return module.METHOD
