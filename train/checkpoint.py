"""Checkpoints: weights plus everything needed to rebuild, resume and export the model.

A checkpoint is data, never code. It holds tensors and plain values only (dict, list, tuple,
str, int, float, bool, None): :func:`save_checkpoint` turns numpy scalars and subclasses of
str/int/float into plain values and refuses anything else, and :func:`load_checkpoint` reads
with torch's weights-only unpickler, which builds nothing but those, so a crafted file runs
no code. Checkpoints written before this rule stored ``torch_version`` as torch's
``TorchVersion`` (a str subclass): that one class is allowed too and read back as a str.
Older weak-label runs that stored numpy numbers are refused with a line that says to
train again.

:func:`load_checkpoint` also checks every field export and resume read (present, of the
right type, a config the method accepts), so a damaged or doctored file is one line naming
the field instead of a traceback deep inside them; :func:`load_weights` checks the weights
against the model they are loaded into.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.torch_version import TorchVersion

from adedge.atomic import atomic_path
from adedge.errors import CheckpointError

CHECKPOINT_FORMAT = 1
LAST = "last.pt"
BEST = "best.pt"
TRAIN_AGAIN = "use a checkpoint written by `adedge train`"
SAFE_OLD_GLOBALS = [TorchVersion]  # str subclass in checkpoints of earlier versions


class DamagedCheckpoint(CheckpointError):
    """A checkpoint file torch cannot read at all (truncated, overwritten, not a torch file)."""


class NotPlain(TypeError):
    """A value other than tensors and plain values, at ``where`` (e.g. ``history[0].x``)."""

    def __init__(self, where: str, value: Any) -> None:
        self.where = where
        self.kind = f"{type(value).__module__}.{type(value).__qualname__}"
        super().__init__(
            f"checkpoint field '{where}' is a {self.kind}: a checkpoint holds only tensors "
            "and plain values (dict, list, tuple, str, int, float, bool, None)"
        )


def _at(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def plain(value: Any, where: str = "") -> Any:
    """``value`` as tensors and plain values, which torch's weights-only loader reads back.

    numpy scalars become Python numbers and subclasses of str/int/float (``TorchVersion``)
    their base type; containers keep their type (an ``OrderedDict`` state dict keeps its
    ``_metadata``). Anything else is a bug in the caller: :class:`NotPlain` (a TypeError)
    names where it is.
    """
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach() if isinstance(value, torch.nn.Parameter) else value
    if isinstance(value, np.generic) and not isinstance(value, (np.void, np.object_)):
        return plain(value.item(), where)
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, dict):
        items = ((plain(k, _at(where, "<key>")), plain(v, _at(where, k))) for k, v in value.items())
        if isinstance(value, OrderedDict):
            result: dict[Any, Any] = OrderedDict(items)
            metadata = getattr(value, "_metadata", None)
            if metadata is not None:
                result._metadata = plain(metadata, _at(where, "_metadata"))  # type: ignore[attr-defined]
            return result
        return dict(items)
    if isinstance(value, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise NotPlain(where, value)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary name and rename: a crash never leaves a broken checkpoint."""
    data = plain({"adedge_checkpoint": CHECKPOINT_FORMAT, **payload})
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """The file a --checkpoint names: the file itself, or a run folder's best.pt (or last.pt)."""
    file = Path(path)
    if file.is_dir():
        file = file / BEST if (file / BEST).is_file() else file / LAST
    return file


def load_checkpoint(path: str | os.PathLike[str], method: str | None = None) -> dict[str, Any]:
    """Read a checkpoint; a CheckpointError names a missing, foreign, damaged, crafted or
    other-method file, or the fields it lacks or holds with a wrong type."""
    file = checkpoint_file(path)
    if not file.is_file():
        raise CheckpointError(
            f"checkpoint '{path}' does not exist",
            "pass a .pt file written by `adedge train` (or its run folder) with --checkpoint",
        )
    payload = read_plain(file)
    if not isinstance(payload, dict) or "adedge_checkpoint" not in payload:
        raise CheckpointError(f"'{file}' is not an adedge checkpoint", TRAIN_AGAIN)
    try:
        payload = plain(payload)  # an older file's TorchVersion becomes a str
    except NotPlain as exc:  # e.g. a torch.dtype: loadable, but nothing adedge writes
        raise invalid(file, f"its field '{exc.where}' holds a {exc.kind}") from None
    named = payload.get("method")
    if not isinstance(named, str):
        raise invalid(file, f"its field 'method' is {describe(named)}, not a method name")
    if method is not None and named != method:
        raise CheckpointError(
            f"checkpoint '{file}' is a {named} model, not {method}",
            f"use --method {named} or a {method} checkpoint",
        )
    check_payload(payload, file)
    payload["path"] = str(file)
    return payload


def read_plain(file: Path) -> Any:
    """``torch.load`` with the weights-only unpickler; what it refuses is never unpickled."""
    try:
        with torch.serialization.safe_globals(SAFE_OLD_GLOBALS):
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or refused file
        foreign = refused_globals(file, exc)
        if foreign is None:
            raise DamagedCheckpoint(
                f"checkpoint '{file}' cannot be read ({type(exc).__name__})",
                "it is damaged or not a torch file: use another checkpoint or train again",
            ) from None
    names = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
    names = names or "objects torch's weights-only loader refuses"
    if foreign and all(name.startswith("numpy.") for name in foreign):
        raise CheckpointError(
            f"checkpoint '{file}' holds numpy values ({names}), as weak-label runs of older "
            "adedge versions stored them, and adedge loads only tensors and plain values",
            "train the run again with this version (`adedge train ...`)",
        )
    raise CheckpointError(
        f"checkpoint '{file}' holds objects other than tensors and plain values ({names}): "
        "it was not written by adedge or was tampered with; adedge never runs code from a "
        "checkpoint",
        TRAIN_AGAIN,
    )


def refused_globals(file: Path, error: Exception) -> list[str] | None:
    """The classes and functions a refused file would have unpickled (read statically, never
    run); None where the file was not refused but is damaged or no torch file."""
    allowed = {f"{cls.__module__}.{cls.__qualname__}" for cls in SAFE_OLD_GLOBALS}
    try:
        found = set(torch.serialization.get_unsafe_globals_in_checkpoint(file)) - allowed
    except Exception:  # not a zip checkpoint (the legacy format), or not readable
        found = set()
    text = str(error)
    if not found:  # the legacy format: the one global named in torch's message
        found = set(re.findall(r"GLOBAL ([\w.]+) was not an allowed global", text)) - allowed
    if found:
        return sorted(found)
    return [] if "Weights only load failed" in text else None


def invalid(file: Path, problem: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint '{file}' is not a valid adedge checkpoint: {problem}",
        f"it is damaged or was changed after training: {TRAIN_AGAIN}",
    )


def describe(value: Any) -> str:
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def is_json(value: Any) -> bool:
    """Plain values in dicts and lists, no tensors: what a card or history.jsonl can hold."""
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and is_json(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(is_json(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def is_tensor_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


# every field export and resume read: (check, what it must be)
REQUIRED: dict[str, tuple[Any, str]] = {
    "method": (lambda v: isinstance(v, str), "a method name"),
    "config": (lambda v: isinstance(v, dict) and is_json(v), "a dict of config fields"),
    "class_names": (lambda v: is_str_list(v) and len(v) > 0, "a non-empty list of names"),
    "input_spec": (lambda v: isinstance(v, dict) and is_json(v), "a dict (the input spec)"),
    "data": (lambda v: isinstance(v, dict) and is_json(v), "a dict (the data summary)"),
    "model": (lambda v: is_tensor_dict(v) and len(v) > 0, "a non-empty dict of named tensors"),
    "optimizers": (
        lambda v: isinstance(v, dict) and all(isinstance(s, dict) for s in v.values()),
        "a dict of optimizer state dicts",
    ),
    "epoch": (lambda v: is_int(v) and v >= 0, "an int >= 0"),
    "step_in_epoch": (lambda v: is_int(v) and v >= 0, "an int >= 0"),
    "loss_sums": (
        lambda v: isinstance(v, dict) and all(is_number(x) for x in v.values()),
        "a dict of numbers",
    ),
    "loss_count": (lambda v: is_int(v) and v >= 0, "an int >= 0"),
    "history": (
        lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v) and is_json(v),
        "a list of per-epoch dicts",
    ),
    "best_val": (is_number, "a number"),
    "rng": (
        lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.dim() == 1,
        "a uint8 tensor (torch's RNG state)",
    ),
}
OPTIONAL: dict[str, tuple[Any, str]] = {
    "preset": (lambda v: isinstance(v, str), "a preset name"),
    "labels": (lambda v: isinstance(v, dict) and is_json(v), "a dict of plain values"),
    "frame_spec": (lambda v: isinstance(v, dict) and is_json(v), "a dict (the frame spec)"),
    "stage_plan": (lambda v: isinstance(v, dict) and is_json(v), "a dict (the stage plan)"),
    "epoch_seconds": (is_number, "a number"),
}


def check_payload(payload: dict[str, Any], file: Path) -> None:
    """Every field export and resume read is there and of its type; the config and stage
    plan rebuild. Raises one CheckpointError naming what is wrong."""
    missing = [key for key in REQUIRED if key not in payload]
    if missing:
        raise invalid(file, f"it lacks {', '.join(missing)} (adedge checkpoints hold them all)")
    for key, (check, kind) in {**REQUIRED, **OPTIONAL}.items():
        given = key in payload and not (key in OPTIONAL and payload[key] is None)
        if given and not check(payload[key]):
            raise invalid(file, f"its field '{key}' is {describe(payload[key])}, not {kind}")
    if not isinstance(payload["data"].get("data"), str):
        raise invalid(file, "its field 'data' lacks 'data' (the --data the run was trained on)")
    check_specs(payload, file)
    check_config(payload, file)


def check_specs(payload: dict[str, Any], file: Path) -> None:
    from adedge.preprocess import InputSpec
    from adedge.train.methods.base import StagePlan, TrainView

    for key in ("input_spec", "frame_spec"):
        if payload.get(key) is not None:
            try:
                spec = InputSpec.from_dict(payload[key])
            except (KeyError, TypeError, ValueError) as exc:
                what = f"its field '{key}' is no input spec ({problem(exc)})"
                raise invalid(file, what) from None
            if min(spec.height, spec.width) < 1 or len(spec.mean) != len(spec.std):
                raise invalid(file, f"its field '{key}' has a bad size or normalisation")
    plan = payload.get("stage_plan")
    if plan:
        try:
            view = plan.get("view") or {}
            StagePlan(**{**plan, "view": TrainView(**view)})
        except (TypeError, ValueError) as exc:
            what = f"its field 'stage_plan' is no stage plan ({problem(exc)})"
            raise invalid(file, what) from None


def check_config(payload: dict[str, Any], file: Path) -> None:
    """The config's known fields have their declared types and the method accepts it."""
    from adedge.errors import AdedgeError
    from adedge.train.methods import load_method

    try:
        method = load_method(payload["method"])
    except AdedgeError:
        raise invalid(file, f"its method '{payload['method']}' is unknown") from None
    config = payload["config"]
    declared = {f.name: str(f.type) for f in fields(method.config_type)}
    for key, value in config.items():
        if key in declared and not fits(value, declared[key]):
            raise invalid(
                file, f"its config field '{key}' is {describe(value)}, not {declared[key]}"
            )
    try:
        method.stage_plan(method.config_from_dict(config))
    except (TypeError, ValueError, AttributeError) as exc:
        raise invalid(
            file, f"its config is not one {method.name} accepts ({problem(exc)})"
        ) from None


def fits(value: Any, declared: str) -> bool:
    """Whether ``value`` has the type a config field declares (as its annotation string);
    kinds other than int, float, bool and str (tuples, lists) are not checked here."""
    kinds = {part.strip() for part in declared.split("|")}
    if value is None:
        return "None" in kinds
    simple = kinds - {"None"}
    if not simple <= {"int", "float", "bool", "str"}:
        return True
    if isinstance(value, bool):
        return "bool" in simple
    if isinstance(value, (int, float)):
        return "float" in simple or (isinstance(value, int) and "int" in simple)
    return isinstance(value, str) and "str" in simple


def problem(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def load_weights(model: torch.nn.Module, checkpoint: dict[str, Any]) -> None:
    """Load the checkpoint's weights into ``model``, built from its own config; weights that
    do not fit (names or shapes) are one CheckpointError, not torch's RuntimeError."""
    file = checkpoint.get("path", "checkpoint")
    wanted = model.state_dict()
    given = checkpoint["model"]
    missing = [k for k in wanted if k not in given]
    extra = [k for k in given if k not in wanted]
    shapes = [k for k in wanted if k in given and given[k].shape != wanted[k].shape]
    if missing or extra or shapes:
        parts = [
            f"{label} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
            for label, names in (("missing", missing), ("unexpected", extra), ("shape of", shapes))
            if names
        ]
        raise invalid(
            Path(file),
            f"its weights do not fit the {checkpoint['method']} model its config builds "
            f"({'; '.join(parts)})",
        )
    model.load_state_dict(given)
