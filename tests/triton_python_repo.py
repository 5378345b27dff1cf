"""A Triton model repository whose models run a bundle stage's ONNX graph in Triton's Python
backend (``tests/triton_models/onnx_model.py``), for the tests against the ``nvidia-pytriton``
server, whose wheel has no ``onnxruntime_onnx`` backend.

Each config is the one ``adedge triton-repo`` writes (:func:`plan_repository` and
:func:`config_text`: inputs, outputs, max_batch_size, dynamic_batching, the card in
``parameters``) with ``backend: "python"`` in place of its ``platform`` line; the version
folder holds ``model.py`` and the stage's ``model.onnx``. A test stand-in, so it lives under
tests/ rather than in the runtime.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from adedge.export.triton_repo import RepoOptions, plan_repository
from adedge.runtime.triton_config import CONFIG_NAME, ONNX_FILE, config_text

MODEL_PY = Path(__file__).resolve().parent / "triton_models" / "onnx_model.py"


def python_config_text(text: str) -> str:
    """``config_text``'s output with the Python backend in place of the ONNX platform."""
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("platform: "))
    lines[index] = 'backend: "python"'
    return "\n".join(lines) + "\n"


def write_python_repository(
    bundles: Sequence[Path], out: Path, options: RepoOptions | None = None, version: int = 1
) -> list[str]:
    """Write ``out/<bundle>_<stage>/`` for every stage; the model names."""
    options = options or RepoOptions(instance_kind="cpu")
    names = []
    for item in plan_repository(bundles, options):
        model = item.model
        folder = Path(out) / model.name
        (folder / str(version)).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.onnx, folder / str(version) / ONNX_FILE)
        shutil.copyfile(MODEL_PY, folder / str(version) / "model.py")
        (folder / CONFIG_NAME).write_text(python_config_text(config_text(model)), "utf-8")
        names.append(model.name)
    return names
