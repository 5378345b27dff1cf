"""The layers: ``adedge/`` and ``runtime/`` never import torch or the training/export stages
at module level, ``runtime/`` never imports a stage at all (not even inside a function: the
runtime runs on a Jetson without them), and a real Y-GAN bundle streams through the CLI where
``import torch`` fails."""

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from jsonl_records import frame_records

ROOT = Path(__file__).resolve().parents[2]
TORCH = ("torch",)
STAGES = ("adedge.train", "adedge.export")


def imports(path: Path, root: Path = ROOT) -> list[tuple[str, int, bool]]:
    """Every import of a file, at any depth: (module, line, at module level). A relative
    import is resolved against the file's package (``root``'s folders mapped as pyproject's
    package-dir maps them: runtime/ is adedge.runtime, ...)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    first, *rest = path.parent.relative_to(root).parts
    package = ".".join(["adedge" if first == "adedge" else f"adedge.{first}", *rest])
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [base]
        found += [(name, node.lineno, id(node) in top) for name in names]
    return found


def _is(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layering_violations(root: Path = ROOT) -> list[str]:
    """What breaks the layering under ``root`` (a checkout of this repository)."""
    found = []
    for folder in ("adedge", "runtime"):
        for path in sorted((root / folder).rglob("*.py")):
            for name, line, top in imports(path, root):
                where = f"{path.relative_to(root)}:{line}"
                if folder == "runtime" and _is(name, STAGES):
                    found.append(f"{where}: imports {name} (runtime never needs a stage)")
                elif top and _is(name, TORCH + STAGES):
                    found.append(f"{where}: imports {name} at module level")
    return found


@pytest.mark.runtime
def test_the_layers_hold():
    assert layering_violations() == []


@pytest.mark.runtime
@pytest.mark.parametrize(
    ("folder", "planted", "found"),
    [
        ("runtime", "def build():\n    from adedge.export import trace\n", "never needs a stage"),
        (
            "runtime/backends",
            "def f():\n    from ...export.fp16 import FP16\n",
            "adedge.export.fp16",
        ),
        ("runtime", "import torch\n", "at module level"),
        ("adedge", "from adedge.train import trainer\n", "at module level"),
    ],
)
def test_a_planted_import_is_caught(tmp_path, folder, planted, found):
    """The check is not a formality: an import planted in a copy of the tree is reported,
    inside a function too (the runtime must never reach a stage)."""
    for name in ("adedge", "runtime"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("*.so"))
    assert layering_violations(tmp_path) == []
    (tmp_path / folder / "planted.py").write_text(planted, encoding="utf-8")
    violations = layering_violations(tmp_path)
    assert len(violations) == 1 and found in violations[0], violations
    assert violations[0].startswith(f"{folder}/planted.py:")


def test_adedge_may_import_a_stage_inside_a_command():
    """The CLI (the package adedge/cli/) imports the training and export stages inside the
    commands that need them."""
    stages = [
        (f"{path.name}:{line}", top)
        for path in sorted((ROOT / "adedge" / "cli").rglob("*.py"))
        for name, line, top in imports(path)
        if _is(name, STAGES)
    ]
    assert stages and not any(top for _, top in stages), stages


BLOCK_TORCH = textwrap.dedent(
    """
    import sys

    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")

    sys.meta_path.insert(0, BlockTorch())
    """
)


def test_ygan_bundle_streams_without_torch(ygan_bundle, tmp_path, digit_video):
    events = tmp_path / "events.jsonl"
    summary = tmp_path / "summary.json"
    script = BLOCK_TORCH + textwrap.dedent(
        f"""
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch should not be importable here")
        sys.argv = ["adedge", "stream", "--model", {str(ygan_bundle)!r},
                    "--source", {str(digit_video)!r}, "--jsonl", {str(events)!r},
                    "--summary-json", {str(summary)!r}, "--quiet"]
        from adedge.cli import main
        try:
            main()
        except SystemExit as stop:
            assert not stop.code, stop.code
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torch"
                        or m.startswith(("adedge.train", "adedge.export")))
        assert loaded == [], loaded
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    lines = frame_records(events)
    stats = json.loads(summary.read_text())
    assert len(lines) == stats["frames_scored"] == stats["frames_read"] > 0
    assert all(0.0 <= line["score"] <= 1.0 for line in lines)  # Y-GAN's score is bounded
