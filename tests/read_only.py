"""A folder made read-only for this process for real, root included (tests run as root in
containers, where permission bits do not bind)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*args: str) -> bool:
    return subprocess.run(list(args), capture_output=True).returncode == 0


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` read-only: a read-only bind mount where this process may mount (root in a
    container), else the immutable attribute, else (not root) plain permissions."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("mount") and _run("mount", "--bind", str(folder), str(folder)):
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], check=True)
        return
    if shutil.which("chattr") and _run("chattr", "+i", str(folder)):
        try:
            yield folder
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    pytest.skip("root, and neither a read-only bind mount nor chattr +i is allowed here")
