"""A Triton model's ``config.pbtxt`` for one bundle stage: written from a :class:`TritonModel`,
checked against Triton's real schema (:mod:`adedge.runtime.triton_schema`), and read back
into the adedge card a ``triton://`` backend rebuilds its Detector from.

The whole card rides in the config's ``parameters`` (``adedge_card``: the card JSON;
``adedge_stage``: which of its stages this model is), as Ultralytics embeds its metadata, so
the server alone tells a client how to resize, normalise, tile, reduce and threshold.

Torch- and onnx-free: the future backend imports this on an edge box.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adedge.bundle import Card, parse_card
from adedge.errors import AdedgeError
from adedge.runtime import triton_schema

CONFIG_NAME = "config.pbtxt"
CARD_PARAMETER = "adedge_card"
STAGE_PARAMETER = "adedge_stage"
ONNX_PLATFORM = "onnxruntime_onnx"
PLAN_PLATFORM = "tensorrt_plan"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
INSTANCE_KINDS = ("gpu", "cpu")
# A model name is a folder of the repository and part of every URL (/v2/models/<name>):
# a plain word, no path separators, no dot first.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
TRITON_PYTHON_ENV = "ADEDGE_TRITON_PYTHON"  # a python with tritonclient[grpc] (.venv-triton)


@dataclass(frozen=True)
class TensorConfig:
    """One input or output without its batch dim; ``dims`` () is Triton's ``[1]`` reshaped
    to ``[]`` (a per-item scalar such as ``score`` (N,))."""

    name: str
    data_type: str  # TYPE_FP32, ...
    dims: tuple[int, ...]  # -1: a dynamic dim


@dataclass(frozen=True)
class TritonModel:
    """Everything one ``config.pbtxt`` says."""

    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    instance_kind: str  # gpu | cpu
    instance_count: int
    card: Card
    stage: str


def check_model_name(name: str) -> str:
    if not MODEL_NAME.fullmatch(name) or ".." in name:
        raise AdedgeError(
            f"'{name}' is not a valid Triton model name",
            "use letters, digits, '_', '-' and '.' (not first), at most 128 characters",
        )
    return name


def _quote(text: str) -> str:
    """A protobuf text-format string literal (the card JSON is ASCII: json ensure_ascii)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tensor_text(kind: str, tensor: TensorConfig) -> list[str]:
    dims = tensor.dims or (1,)
    lines = [
        f"{kind} {{",
        f"  name: {_quote(tensor.name)}",
        f"  data_type: {tensor.data_type}",
        f"  dims: [ {', '.join(str(d) for d in dims)} ]",
    ]
    if not tensor.dims:
        lines.append("  reshape: { shape: [ ] }")
    return [*lines, "}"]


def config_text(model: TritonModel) -> str:
    """The ``config.pbtxt`` text (deterministic: the same model gives the same bytes)."""
    card_json = json.dumps(model.card.to_dict(), sort_keys=True, ensure_ascii=True)
    lines = [
        f"name: {_quote(model.name)}",
        f"platform: {_quote(model.platform)}",
        f"max_batch_size: {model.max_batch_size}",
    ]
    for tensor in model.inputs:
        lines += _tensor_text("input", tensor)
    for tensor in model.outputs:
        lines += _tensor_text("output", tensor)
    sizes = ", ".join(str(size) for size in model.preferred_batch_sizes)
    lines += [
        "dynamic_batching {",
        f"  preferred_batch_size: [ {sizes} ]",
        f"  max_queue_delay_microseconds: {model.max_queue_delay_us}",
        "}",
        "instance_group {",
        f"  kind: KIND_{model.instance_kind.upper()}",
        f"  count: {model.instance_count}",
        "}",
    ]
    if model.platform == ONNX_PLATFORM and not model.card.stage(model.stage).nchwc:
        # Triton's ONNX Runtime backend names levels, not passes: 1 is basic + extended,
        # all but the layout passes, whose NCHWc the card turns off for this stage
        lines += ["optimization {", "  graph { level: 1 }", "}"]
    for key, value in ((STAGE_PARAMETER, model.stage), (CARD_PARAMETER, card_json)):
        lines += [
            "parameters {",
            f"  key: {_quote(key)}",
            f"  value: {{ string_value: {_quote(value)} }}",
            "}",
        ]
    return "\n".join(lines) + "\n"


def triton_python() -> str | None:
    return os.environ.get(TRITON_PYTHON_ENV) or None


def parse_configs(paths: Sequence[Path], python: str | None = None) -> tuple[str, list[dict]]:
    """Each file parsed by Triton's schema: (which schema, the configs as dicts).

    In this process where tritonclient imports, else with ``python`` (or
    ``$ADEDGE_TRITON_PYTHON``) running :mod:`triton_schema` as a script; neither: an error.
    """
    python = python or triton_python()
    if python is None:
        try:
            return triton_schema.schema_version(), [
                triton_schema.parse_config_text(Path(p).read_text("utf-8")) for p in paths
            ]
        except ImportError:
            raise AdedgeError(
                "tritonclient is not installed here: the configs cannot be checked "
                "against Triton's schema",
                f"pip install 'tritonclient[grpc]', or set {TRITON_PYTHON_ENV} (or "
                "--triton-python) to a python that has it, e.g. .venv-triton/bin/python",
            ) from None
        except Exception as error:
            raise AdedgeError(
                f"a config breaks Triton's schema: {error}".replace("\n", " "),
                "this is a bug in adedge's config writer: please report it",
            ) from None
    command = [python, triton_schema.__file__, *map(str, paths)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except OSError as error:
        raise AdedgeError(f"cannot run {python}: {error}", f"check {TRITON_PYTHON_ENV}") from None
    if done.returncode != 0:
        last = (done.stdout.strip() or done.stderr.strip() or "no output").splitlines()[-1]
        raise AdedgeError(
            f"Triton's schema check ({python}) failed: {last}",
            "a python with tritonclient[grpc] is needed (make triton-venv)",
        )
    result = json.loads(done.stdout)
    return result["schema"], result["configs"]


def config_tensors(config: Mapping[str, Any], kind: str) -> dict[str, TensorConfig]:
    """A parsed config's inputs or outputs by name, dims as the model sees them (a
    ``reshape`` replaces ``dims``; MessageToDict writes int64 as strings)."""
    tensors = {}
    for entry in config.get(kind, []):
        dims = entry.get("reshape", {}).get("shape") if "reshape" in entry else entry.get("dims")
        tensors[entry["name"]] = TensorConfig(
            entry["name"], entry.get("data_type", "TYPE_INVALID"), tuple(int(d) for d in dims or ())
        )
    return tensors


def card_from_config(config: Mapping[str, Any], where: str = CONFIG_NAME) -> tuple[Card, str]:
    """(card, stage name) from a parsed model config: the dict of ``MessageToDict`` or of
    Triton's HTTP ``/v2/models/<name>/config`` (both: ``parameters.<key>.string_value``)."""
    parameters = config.get("parameters") or {}
    try:
        card_json = parameters[CARD_PARAMETER]["string_value"]
        stage = parameters[STAGE_PARAMETER]["string_value"]
    except (KeyError, TypeError):
        raise AdedgeError(
            f"{where}: model '{config.get('name', '?')}' has no adedge card in its parameters",
            "export its repository with `adedge triton-repo`",
        ) from None
    try:
        data = json.loads(card_json)
    except ValueError as error:
        raise AdedgeError(f"{where}: the {CARD_PARAMETER} parameter is not JSON: {error}") from None
    card = parse_card(data, f"{where} ({CARD_PARAMETER})")
    if stage not in [spec.name for spec in card.stages]:
        raise AdedgeError(f"{where}: the card has no stage '{stage}' ({STAGE_PARAMETER})")
    return card, stage


def read_config_file(path: str | Path, python: str | None = None) -> tuple[Card, str]:
    """(card, stage) from a ``config.pbtxt`` on disk, parsed by Triton's schema."""
    _, (config,) = parse_configs([Path(path)], python)
    return card_from_config(config, str(path))
