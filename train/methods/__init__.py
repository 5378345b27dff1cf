"""One file per method. ``load_method(name)`` imports the file the registry found, whose
``@register_method`` registers it."""

from __future__ import annotations

import importlib

from adedge.registry import get_method
from adedge.train.methods.base import REGISTERED, Method


def load_method(name: str) -> Method:
    info = get_method(name)
    importlib.import_module(info.module)
    method = REGISTERED.get(info.name)
    if method is None or method.info != info:
        raise ImportError(
            f"importing {info.module} did not register '{info.name}' as its file declares "
            "(its @register_method must be the one on its Method class)"
        )
    return method
