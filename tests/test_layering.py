"""DESIGN §2: adedge/ and runtime/ never import torch (or the train/export stages) at module
level, and a real Y-GAN bundle streams through the CLI where `import torch` fails."""

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from jsonl_records import frame_records

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "adedge.train", "adedge.export")


def module_level_imports(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.runtime
def test_no_module_level_torch_in_adedge_and_runtime():
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for folder in ("adedge", "runtime")
        for path in (ROOT / folder).rglob("*.py")
        for name in module_level_imports(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert offenders == []


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
