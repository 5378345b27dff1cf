"""Builds the optional C++ extension ``adedge._cpp`` (cpp_ext/).

Everything else about the package lives in pyproject.toml. The extension is optional: the
runtime falls back to its numpy/OpenCV twins (adedge.runtime.kernels), so a machine without
a C++17 compiler or without pybind11 still installs the package; the build then prints a
warning instead of failing. ``ADEDGE_NO_CPP=1`` skips the extension on purpose.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = ["cpp_ext/kernels.cpp", "cpp_ext/module.cpp"]
HEADERS = ["cpp_ext/kernels.hpp"]
# -ffp-contract=off: no fused multiply-add on aarch64 either, so the normalisation rounds
# exactly like numpy's float32 multiply-then-subtract on every platform.
UNIX_FLAGS = ["-std=c++17", "-O3", "-g0", "-fvisibility=hidden", "-ffp-contract=off", "-pthread"]
MSVC_FLAGS = ["/std:c++17", "/O2", "/fp:precise"]


def _warn(message: str) -> None:
    print(
        f"WARNING: adedge._cpp not built ({message}); the runtime uses its numpy twins.",
        file=sys.stderr,
    )


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing: the extension only speeds the runtime up."""

    def build_extension(self, ext: Extension) -> None:
        msvc = self.compiler.compiler_type == "msvc"
        ext.extra_compile_args = list(MSVC_FLAGS if msvc else UNIX_FLAGS)
        ext.extra_link_args = [] if msvc else ["-pthread"]
        try:
            super().build_extension(ext)
        except Exception as error:  # compiler missing or failing: keep the pure-Python package
            _warn(f"{type(error).__name__}: {error}")

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # e.g. no compiler configured at all
            _warn(f"{type(error).__name__}: {error}")


def _extensions() -> list[Extension]:
    if os.environ.get("ADEDGE_NO_CPP", "") not in ("", "0"):
        _warn("ADEDGE_NO_CPP is set")
        return []
    try:
        import pybind11
    except ImportError:
        _warn("pybind11 is not installed")
        return []
    return [
        Extension(
            "adedge._cpp",
            sources=SOURCES,
            depends=HEADERS,
            include_dirs=[pybind11.get_include(), "cpp_ext"],
            language="c++",
        )
    ]


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
