"""The methods adedge knows, found without importing them (no torch): the CLI lists and
checks method names and writes its help from this.

A method is one file in ``adedge.train.methods``; its file name is the method's name, and
its Method class carries ``@register_method(...)`` (:mod:`adedge.train.methods.base`) with
everything the rest of adedge needs to know about it: title, paper, modes, pretrained
weights, headline losses and the paper's timings. The registry reads that decorator's
arguments from the file's text, so they must be literal values (strings, numbers, tuples,
lists, dicts and ``PaperTime(...)``); importing the file registers the same values.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import pkgutil
import re
import tokenize
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from adedge.errors import AdedgeError

METHODS_PACKAGE = "adedge.train.methods"
DECORATOR = "register_method"


@dataclass(frozen=True)
class PaperTime:
    """A per-image time a paper reports, on its own hardware.

    ``image_size``: the input side it was timed at; None where the paper does not say (it is
    then quoted beside every benchmark case of the method). ``label``: the name `adedge
    bench` shows it under for a bundle of this method; None for the other methods' times a
    paper quotes, which are shown beside the benchmark cases only.
    """

    ms: float
    hardware: str
    what: str
    image_size: int | None = None
    label: str | None = None


@dataclass(frozen=True)
class MethodInfo:
    """What one method declares with ``@register_method``.

    ``modes``: mode name -> what it does (a config ``mode`` field takes these); empty for a
    method without modes. ``pretrained_field``: the config field ``--backbone-weights`` sets,
    and ``pretrained_weights`` what file it takes; None where the method uses none.
    ``headline_losses``: the logged losses each epoch's line shows. ``module``: the import
    name of its file.
    """

    name: str
    title: str
    paper: str
    module: str = ""
    needs_subclasses: bool = False
    modes: dict[str, str] = field(default_factory=dict)
    pretrained_field: str | None = None
    pretrained_weights: str | None = None
    headline_losses: tuple[str, ...] = ()
    paper_timings: tuple[PaperTime, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"method name '{self.name}' must be lower case letters and digits")
        if (self.pretrained_field is None) != (self.pretrained_weights is None):
            raise ValueError(f"{self.name}: give pretrained_field and pretrained_weights together")
        object.__setattr__(self, "headline_losses", tuple(self.headline_losses))
        object.__setattr__(self, "paper_timings", tuple(self.paper_timings))
        object.__setattr__(self, "modes", dict(self.modes))

    @property
    def paper_ms_per_image(self) -> dict[str, float]:
        """The paper's times for this method's own model, by label (what a bundle's card
        carries for `adedge bench`)."""
        return {t.label: t.ms for t in self.paper_timings if t.label is not None}

    def paper_times_at(self, image_size: int) -> tuple[PaperTime, ...]:
        """The paper's times quoted beside a benchmark case at ``image_size``."""
        return tuple(t for t in self.paper_timings if t.image_size in (None, image_size))


class MethodFileError(ValueError):
    """A method file whose registration cannot be read (a developer's mistake)."""


@dataclass(frozen=True)
class MethodFolder:
    """A folder of method files, importable as ``package.<name>``."""

    package: str
    path: Path


def method_folders() -> list[MethodFolder]:
    """Where method files live: the folder of ``adedge.train.methods``, located through the
    import system without importing ``adedge.train`` (which would need torch soon after)."""
    parent, _, leaf = METHODS_PACKAGE.rpartition(".")
    spec = importlib.util.find_spec(parent)
    if spec is None or not spec.submodule_search_locations:
        return []  # a runtime-only install: no method can be trained here
    return [
        MethodFolder(METHODS_PACKAGE, Path(location) / leaf)
        for location in spec.submodule_search_locations
    ]


def discover(folders: tuple[MethodFolder, ...]) -> dict[str, MethodInfo]:
    """Every method file in ``folders``: modules whose Method class is registered."""
    found: dict[str, MethodInfo] = {}
    for folder in folders:
        for module in pkgutil.iter_modules([str(folder.path)]):
            if module.ispkg or module.name.startswith("_"):
                continue
            file = folder.path / f"{module.name}.py"
            info = read_registration(file, f"{folder.package}.{module.name}")
            if info is None:
                continue  # a helper module (e.g. base.py), not a method
            if info.name != module.name:
                raise MethodFileError(
                    f"{file}: registers '{info.name}', but its file name says "
                    f"'{module.name}' (the file name is the method's name)"
                )
            if info.name in found:
                raise MethodFileError(f"{file}: method '{info.name}' is registered twice")
            found[info.name] = info
    return found


@lru_cache(maxsize=8)
def _discovered(folders: tuple[MethodFolder, ...]) -> dict[str, MethodInfo]:
    return discover(folders)


class _Methods(Mapping[str, MethodInfo]):
    """The methods in :func:`method_folders`, discovered on first use."""

    def _all(self) -> dict[str, MethodInfo]:
        return _discovered(tuple(method_folders()))

    def __getitem__(self, name: str) -> MethodInfo:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


METHODS: Mapping[str, MethodInfo] = _Methods()


def method_names() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> MethodInfo:
    key = name.strip().lower().replace("-", "")
    if key not in METHODS:
        raise AdedgeError(f"unknown method '{name}'", f"choose one of: {', '.join(method_names())}")
    return METHODS[key]


# --- reading a registration from a method file's text ----------------------------------------

_DECORATOR_LINE = re.compile(rf"^@{DECORATOR}\(", re.MULTILINE)


def read_registration(file: Path, module: str) -> MethodInfo | None:
    """The ``@register_method(...)`` arguments in ``file`` as a MethodInfo; None where the file
    registers no method. Only the decorator is tokenised and parsed, not the whole file."""
    source = file.read_text(encoding="utf-8")
    match = _DECORATOR_LINE.search(source)
    if match is None:
        return None
    text = source[match.start() + 1 :]
    call = ast.parse(text[: _call_end(text, file)], mode="eval").body
    if not isinstance(call, ast.Call) or call.args:
        raise MethodFileError(f"{file}: give @{DECORATOR}'s arguments by name")
    try:
        arguments = {k.arg: _literal(k.value, file) for k in call.keywords if k.arg}
        return MethodInfo(module=module, **arguments)
    except MethodFileError:
        raise
    except (TypeError, ValueError) as exc:
        raise MethodFileError(f"{file}: @{DECORATOR}: {exc}") from None


def _call_end(text: str, file: Path) -> int:
    """The offset just past the closing parenthesis of the call that ``text`` starts with."""
    line_starts = [0]
    for line in io.StringIO(text):
        line_starts.append(line_starts[-1] + len(line))
    depth = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
                if depth == 0:
                    row, column = token.end
                    return line_starts[row - 1] + column
    except (tokenize.TokenError, SyntaxError):
        pass
    raise MethodFileError(f"{file}: @{DECORATOR}(...) is not closed")


def _literal(node: ast.expr, file: Path) -> Any:
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == PaperTime.__name__
    ):
        args = [_literal(a, file) for a in node.args]
        return PaperTime(*args, **{k.arg: _literal(k.value, file) for k in node.keywords})
    if isinstance(node, ast.Tuple):
        return tuple(_literal(item, file) for item in node.elts)
    if isinstance(node, ast.List):
        return [_literal(item, file) for item in node.elts]
    if isinstance(node, ast.Dict):
        return {
            _literal(k, file): _literal(v, file)
            for k, v in zip(node.keys, node.values, strict=True)
            if k is not None
        }
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise MethodFileError(
            f"{file}: @{DECORATOR}'s arguments must be literal values (the registry reads "
            f"them without importing the file), not '{ast.unparse(node)}'"
        ) from None
