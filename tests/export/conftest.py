"""Fixtures of the export tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def not_a_checkpoint(tmp_path: Path) -> Path:
    """A file named like a checkpoint that is not one: options must be refused before it
    is ever read."""
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint")
    return path
