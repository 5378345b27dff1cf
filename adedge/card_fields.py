"""The field checks every card read goes through: one BundleError line per problem.

:class:`FieldReader` reads one field of a card dict at a time (present, of its type, finite,
in range) and names it by its dotted path (e.g. ``stages.global.weight``) with the fix;
:func:`file_problem` refuses, from the text alone, a file name that would leave the bundle
folder. :mod:`adedge.card_reader` reads a whole card with them, and
:mod:`adedge.card_migrations` upgrades older cards with them.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from adedge.card import SHA256_HEX, finite_number, show_value
from adedge.errors import BundleError

REEXPORT = "re-export the bundle with `adedge export` or fix the card by hand"
_MISSING = object()
_EXPECTED = {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "a bool"}
OUTSIDE = "names a file outside the bundle folder"
OUTSIDE_HINT = (
    "a card names its files by relative paths inside its folder (no '..', no absolute path, "
    "no link leading out): re-export the bundle or fix the card by hand"
)


def field_error(where: Path | str, field_name: str, problem: str, hint: str = "") -> BundleError:
    return BundleError(f"{where}: field '{field_name}' {problem}", hint or REEXPORT)


def file_problem(name: str) -> str | None:
    """What is wrong with a card's file name from its text alone (None: nothing)."""
    if not name:
        return "is empty"
    if "\x00" in name:
        return "holds a NUL character"
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.anchor or ".." in posix.parts or ".." in windows.parts:
        return OUTSIDE
    return None


class FieldReader:
    """Reads the fields of a card dict, raising a BundleError that names the offending field
    (its dotted path) and the fix."""

    def __init__(self, where: Path) -> None:
        self.where = where

    def fail(self, field_name: str, problem: str, hint: str = "") -> BundleError:
        return field_error(self.where, field_name, problem, hint)

    def get(
        self,
        data: dict,
        key: str,
        kind: type | tuple[type, ...],
        path: str,
        default: Any = _MISSING,
    ) -> Any:
        """``data[key]`` of type ``kind`` (never a bool unless ``kind`` is bool); a ``default``
        stands in for an absent or null value."""
        if key not in data or (data[key] is None and default is not _MISSING):
            if default is _MISSING:
                raise self.fail(path, "is missing")
            return default
        value = data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            expected = _EXPECTED.get(kind, "a number")  # type: ignore[call-overload]
            raise self.fail(
                path, f"has the wrong type ({type(value).__name__}): it must be {expected}"
            )
        return value

    def text(
        self, data: dict, key: str, path: str, default: Any = _MISSING, empty: bool = False
    ) -> str:
        value = self.get(data, key, str, path, default)
        if not value and not empty:
            raise self.fail(path, "is empty")
        return value

    def word(
        self, data: dict, key: str, choices: tuple[str, ...], path: str, default: Any = _MISSING
    ) -> str:
        value = self.get(data, key, str, path, default)
        if value not in choices:
            raise self.fail(path, f"must be one of {', '.join(choices)} (got {show_value(value)})")
        return value

    def number(self, data: dict, key: str, path: str, default: Any = _MISSING) -> float:
        value = self.get(data, key, (int, float), path, default)
        number = finite_number(value)
        if number is None:
            raise self.fail(path, f"must be a finite number (got {show_value(value)})")
        return number

    def count(self, data: dict, key: str, path: str, limit: int, default: Any = _MISSING) -> int:
        value = self.get(data, key, int, path, default)
        if not 0 < value <= limit:
            raise self.fail(path, f"must be an integer from 1 to {limit} (got {show_value(value)})")
        return value

    def numbers(
        self, data: dict, key: str, path: str, count: int, low: float, high: float
    ) -> tuple[float, ...]:
        values = self.get(data, key, list, path)
        if len(values) != count:
            raise self.fail(path, f"must hold {count} number(s), one per channel")
        numbers = []
        for value in values:
            number = finite_number(value)
            if number is None or not low <= number <= high:
                raise self.fail(
                    path, f"must hold numbers from {low:g} to {high:g} (got {show_value(value)})"
                )
            numbers.append(number)
        return tuple(numbers)

    def file_name(self, data: dict, key: str, path: str) -> str:
        name = self.get(data, key, str, path)
        problem = file_problem(name)
        if problem is not None:
            raise self.fail(path, problem, OUTSIDE_HINT if problem == OUTSIDE else "")
        return name

    def sha256(self, data: dict, key: str, path: str) -> str:
        value = data.get(key)
        if value is None:
            raise self.fail(path, "is missing: every graph the card names needs its sha256")
        if not isinstance(value, str) or not SHA256_HEX.fullmatch(value):
            raise self.fail(
                path,
                f"must be the file's sha256, 64 lowercase hex digits (got {show_value(value)})",
            )
        return value
