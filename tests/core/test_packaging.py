"""What `pip install .` ships: every package folder of the mapped top-level folders is listed
in pyproject's [tool.setuptools] packages, so a module split into a package reaches a Jetson
install too (an editable install would find it anyway and hide the omission)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.runtime  # reads files only


def test_every_package_folder_is_listed_for_the_wheel():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]
    listed = set(setuptools["packages"])
    on_disk = set()
    for package, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join([package, *parts]))
    assert {"adedge.cli", "adedge.data", "adedge.runtime.stream"} <= on_disk
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == set(), "these listed packages have no folder with __init__.py"
