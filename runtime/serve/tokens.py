"""The API's tokens: read once from the files and environment variables ``api.tokens``
names (never from the config itself), checked, and compared in constant time. Who may use
them for what is ``auth.py``'s job.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adedge.errors import AdedgeError
from adedge.runtime.serve.config import ApiConfig, Scope, TokenConfig

MIN_TOKEN_CHARS = 16  # shorter is guessable; `openssl rand -hex 32` gives 64
TOKEN_HINT = "generate one with `openssl rand -hex 32`"


@dataclass(frozen=True)
class Token:
    name: str
    scope: Scope
    secret: bytes = field(repr=False)


class TokenTable:
    """The tokens the API accepts; empty: loopback clients only (see the module docstring)."""

    def __init__(self, tokens: Sequence[Token] = ()) -> None:
        self._tokens = tuple(tokens)

    @property
    def configured(self) -> bool:
        return bool(self._tokens)

    @property
    def names(self) -> list[str]:
        return [token.name for token in self._tokens]

    def match(self, presented: str) -> Token | None:
        """The token equal to ``presented``; every one is compared, in constant time."""
        candidate = presented.encode("utf-8", "surrogateescape")
        found = None
        for token in self._tokens:
            if hmac.compare_digest(token.secret, candidate):
                found = token
        return found

    def __repr__(self) -> str:
        return f"TokenTable({', '.join(f'{t.name}:{t.scope.value}' for t in self._tokens)})"


def load_tokens(api: ApiConfig, env: Mapping[str, str] | None = None) -> TokenTable:
    """Read every ``api.tokens`` entry's secret (files once, stripped); call it before the
    service starts anything. A missing file, an unset variable, an empty or short token or
    two entries with the same token is a one-line AdedgeError naming ``api.tokens[i]``."""
    env = os.environ if env is None else env
    tokens: list[Token] = []
    for index, entry in enumerate(api.tokens):
        key = f"api.tokens[{index}] ({entry.name})"
        secret = _read_secret(entry, key, env)
        if not all(33 <= byte <= 126 for byte in secret):
            raise AdedgeError(
                f"{key}: the token has spaces or characters outside printable ASCII",
                f"it travels in an HTTP header; {TOKEN_HINT}",
            )
        if len(secret) < MIN_TOKEN_CHARS:
            raise AdedgeError(
                f"{key}: the token has {len(secret)} characters; it needs {MIN_TOKEN_CHARS}+",
                TOKEN_HINT,
            )
        for earlier_index, earlier in enumerate(tokens):
            if hmac.compare_digest(earlier.secret, secret):
                raise AdedgeError(
                    f"{key}: the same token as api.tokens[{earlier_index}] ({earlier.name})",
                    "give each entry its own token",
                )
        tokens.append(Token(entry.name, entry.scope, secret))
    return TokenTable(tokens)


def _read_secret(entry: TokenConfig, key: str, env: Mapping[str, str]) -> bytes:
    if entry.env is not None:
        value = env.get(entry.env)
        if value is None:
            raise AdedgeError(
                f"{key}: environment variable {entry.env} is not set",
                f"export {entry.env}=<token> before starting ({TOKEN_HINT})",
            )
        where = f"environment variable {entry.env}"
        text = value.strip()
    else:
        path = Path(str(entry.file))
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise AdedgeError(
                f"{key}: cannot read token file '{path}': {reason}",
                f"write the token to that file ({TOKEN_HINT}) or fix api.tokens[].file",
            ) from None
        where = f"token file '{path}'"
    if not text:
        raise AdedgeError(f"{key}: {where} is empty", f"put a token in it ({TOKEN_HINT})")
    return text.encode("utf-8", "surrogateescape")
