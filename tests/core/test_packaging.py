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
    # data-only packages (the serve console's page) have files in package-data and no code
    data_only = {
        name
        for name in setuptools.get("package-data", {})
        if _folder(setuptools["package-dir"], name).is_dir()
        and not (_folder(setuptools["package-dir"], name) / "__init__.py").exists()
    }
    assert "adedge.runtime.serve.console" in data_only
    assert listed - on_disk - data_only == set(), "listed packages with no folder of their own"


def _folder(package_dir: dict[str, str], package: str) -> Path:
    """The folder of ``package`` under the longest mapped prefix of its name."""
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in package_dir:
            return ROOT / package_dir[prefix] / Path(*parts[cut:])
    return ROOT / Path(*parts)
