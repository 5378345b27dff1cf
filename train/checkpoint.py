"""Checkpoints: weights plus everything needed to rebuild, resume and export the model.

:class:`Checkpoint` is what the trainer writes and export, resume and the benchmarks read:
typed fields, saved as a dict of the same names (:meth:`Checkpoint.to_payload`; the files
of earlier versions have those names too, and still load).

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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.torch_version import TorchVersion

from adedge.atomic import atomic_path
from adedge.errors import CheckpointError
from adedge.paths import LAST, run_checkpoint
from adedge.preprocess import InputSpec
from adedge.train.methods.base import StagePlan, TrainView

CHECKPOINT_FORMAT = 1
TRAIN_AGAIN = "use a checkpoint written by `adedge train`"
SAFE_OLD_GLOBALS = [TorchVersion]  # str subclass in checkpoints of earlier versions


@dataclass
class Checkpoint:
    """One run's state after a training step: what resume restores, and what export and the
    benchmarks read (the method and its config, data and preprocessing, the weights).

    ``config`` is the method's config as a dict (the method turns it back into its config
    class); ``data`` is the data set's summary, ``data["data"]`` the ``--data`` it was
    trained on (:attr:`data_spec`). ``path``: the file it was read from (not saved).
    """

    method: str
    config: dict[str, Any]
    class_names: list[str]
    input_spec: InputSpec
    frame_spec: InputSpec  # what the whole image is resized to (tiled stages cut it)
    stage_plan: StagePlan
    data: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizers: dict[str, dict[str, Any]]
    epoch: int
    step_in_epoch: int
    loss_sums: dict[str, float]
    loss_count: int
    history: list[dict[str, Any]]
    best_val: float
    rng: torch.Tensor
    preset: str | None = None
    labels: dict[str, Any] | None = None
    epoch_seconds: float = 0.0
    saved: str | None = None
    adedge_version: str | None = None
    torch_version: str | None = None
    path: Path | None = None

    @property
    def data_spec(self) -> str:
        return self.data["data"]

    def to_payload(self) -> dict[str, Any]:
        """Plain values under the field names, as ``torch.save`` writes them."""
        payload = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "path"}
        payload["input_spec"] = self.input_spec.to_dict()
        payload["frame_spec"] = self.frame_spec.to_dict()
        payload["stage_plan"] = asdict(self.stage_plan)
        return {"adedge_checkpoint": CHECKPOINT_FORMAT, **payload}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], file: Path) -> Checkpoint:
        """The checkpoint a loaded payload holds, every field checked first (one
        CheckpointError naming what is wrong). Files of earlier versions lack frame_spec and
        stage_plan: they held one whole-image stage at the input size."""
        check_payload(payload, file)
        input_spec = spec_of(payload, "input_spec", file)
        frame_spec = spec_of(payload, "frame_spec", file) or input_spec
        values = {f.name: payload[f.name] for f in fields(cls) if f.name in payload}
        values.update(
            input_spec=input_spec,
            frame_spec=frame_spec,
            stage_plan=plan_of(payload, file) or StagePlan(frame_size=input_spec.height),
            epoch_seconds=payload.get("epoch_seconds") or 0.0,
            path=file,
        )
        return cls(**values)

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.to_payload())


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
    """Write ``payload`` (:meth:`Checkpoint.to_payload`) as plain values to a temporary name
    and rename: a crash never leaves a broken checkpoint."""
    data = plain({"adedge_checkpoint": CHECKPOINT_FORMAT, **payload})
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """The file a --checkpoint names: the file itself, or a run folder's best.pt (or last.pt)."""
    file = Path(path)
    if file.is_dir():
        file = run_checkpoint(file) or file / LAST
    return file


def load_checkpoint(path: str | os.PathLike[str], method: str | None = None) -> Checkpoint:
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
    return Checkpoint.from_payload(payload, file)


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
    """Every field export and resume read is there and of its type, and the config rebuilds
    (the specs and the stage plan are checked as they are read). Raises one CheckpointError
    naming what is wrong."""
    missing = [key for key in REQUIRED if key not in payload]
    if missing:
        raise invalid(file, f"it lacks {', '.join(missing)} (adedge checkpoints hold them all)")
    for key, (check, kind) in {**REQUIRED, **OPTIONAL}.items():
        given = key in payload and not (key in OPTIONAL and payload[key] is None)
        if given and not check(payload[key]):
            raise invalid(file, f"its field '{key}' is {describe(payload[key])}, not {kind}")
    if not isinstance(payload["data"].get("data"), str):
        raise invalid(file, "its field 'data' lacks 'data' (the --data the run was trained on)")
    check_config(payload, file)


def spec_of(payload: dict[str, Any], key: str, file: Path) -> InputSpec | None:
    """The input spec under ``key`` (None where an older file lacks it)."""
    if payload.get(key) is None:
        return None
    try:
        spec = InputSpec.from_dict(payload[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise invalid(file, f"its field '{key}' is no input spec ({problem(exc)})") from None
    if min(spec.height, spec.width) < 1 or len(spec.mean) != len(spec.std):
        raise invalid(file, f"its field '{key}' has a bad size or normalisation")
    return spec


def plan_of(payload: dict[str, Any], file: Path) -> StagePlan | None:
    """The stage plan (None where an older file lacks it)."""
    plan = payload.get("stage_plan")
    if not plan:
        return None
    try:
        view = plan.get("view") or {}
        return StagePlan(**{**plan, "view": TrainView(**view)})
    except (TypeError, ValueError) as exc:
        raise invalid(file, f"its field 'stage_plan' is no stage plan ({problem(exc)})") from None


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


def load_weights(model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """Load the checkpoint's weights into ``model``, built from its own config; weights that
    do not fit (names or shapes) are one CheckpointError, not torch's RuntimeError."""
    file = checkpoint.path or Path("checkpoint")
    wanted = model.state_dict()
    given = checkpoint.model
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
            file,
            f"its weights do not fit the {checkpoint.method} model its config builds "
            f"({'; '.join(parts)})",
        )
    model.load_state_dict(given)
