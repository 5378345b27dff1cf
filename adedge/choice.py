"""The enums of what users type (formats, precisions, backends, protocols).

They mix in ``str`` rather than using ``enum.StrEnum``, which Python 3.10 (JetPack 6) lacks:
a member equals its spelling, hashes like it and is written to JSON as it.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A spelling the user types: ``str()`` and f-strings give the value on every Python
    (3.11 changed what ``format()`` of a mixed-in enum gives)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def spellings(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)
