"""The config file's text around the schema of ``config.py``: ``${NAME}`` secrets from the
environment, and pydantic's validation errors as one line naming the key path
(``cameras.line3.alarm.k: must be >= 1``)."""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import ValidationError

from adedge.errors import AdedgeError

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(AdedgeError):
    """A service configuration that cannot be used: one line naming the key path."""


def substitute_env(value: Any, where: str = "", env: dict[str, str] | None = None) -> Any:
    """``value`` with every ``${NAME}`` in its strings replaced from the environment."""
    env = dict(os.environ) if env is None else env
    if isinstance(value, dict):
        return {k: substitute_env(v, _join(where, str(k)), env) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, _join(where, str(i)), env) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{where or 'config'}: environment variable {name} is not set",
            f"export {name}=... before starting, or write ${{{name}:-default}}",
        )

    return ENV_REFERENCE.sub(replace, value)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def describe_validation(error: ValidationError) -> str:
    """The first problem as ``key.path: message`` (and how many more there are)."""
    problems = error.errors(include_url=False)
    first = problems[0]
    path = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    message = _plain(message, first)
    more = len(problems) - 1
    text = f"{path}: {message}" if path else message
    return text + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def _plain(message: str, problem: dict[str, Any]) -> str:
    """pydantic's wording for the common cases, shortened to what a config reader needs."""
    context = problem.get("ctx") or {}
    kind = problem["type"]
    if kind == "greater_than_equal":
        return f"must be >= {context['ge']}"
    if kind == "greater_than":
        return f"must be > {context['gt']}"
    if kind == "less_than_equal":
        return f"must be <= {context['le']}"
    if kind == "extra_forbidden":
        return "unknown key (check its spelling)"
    if kind == "missing":
        return "is required"
    return message
