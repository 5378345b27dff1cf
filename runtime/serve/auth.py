"""Who may ask the HTTP API what: bearer tokens with a ``viewer`` or ``admin`` scope.

The rule is by method, for the whole app (routers never check): GET and HEAD need
``viewer``, every other method needs ``admin``. Open to anyone, for GET and HEAD only: the
health probes (``/api/health/*``), the console page (``/``, ``/console/*``) and the OpenAPI
description (``/docs``, ``/redoc``, ``/openapi.json``): they show how the API is shaped,
never the service's data, and the page asks for a token before it reads anything.

A token is sent as ``Authorization: Bearer <token>``; for GET and HEAD also as the cookie
``adedge_token``, so the page's ``<img>``, ``<video>`` and MJPEG tags work. A write never
accepts the cookie: another site could make a browser send it (CSRF), not the header.

Tokens live in files or environment variables named by ``api.tokens`` (read once by
:func:`~.tokens.load_tokens` when the service starts; a missing one stops the start with one line),
and are compared in constant time. Without any token configured only this machine's own
clients (loopback) are served, as admin; others get 403 saying how to configure tokens.

Failures are answered 401 (no token, a wrong one) or 403 (a viewer's write, a remote client
without tokens configured) and logged as one line: client IP, method, path and reason,
never the token. Wrong tokens are rate-limited per client IP: :data:`MAX_FAILURES` in
:data:`FAILURE_WINDOW_S` seconds and that IP gets 429 for :data:`BLOCK_S` seconds.

The client IP is the socket's peer. Behind a reverse proxy every client is the proxy: the
rate limit then counts them together, and with no tokens configured a proxy on this machine
makes every client look local (admin), so configure tokens before putting one in front.
``X-Forwarded-For`` is not trusted (there is no setting for a trusted proxy).
"""

from __future__ import annotations

import ipaddress
import json
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from adedge.runtime.serve.config import Scope
from adedge.runtime.serve.tokens import TokenTable

COOKIE_NAME = "adedge_token"
MAX_FAILURES = 5  # wrong tokens from one IP within FAILURE_WINDOW_S ...
FAILURE_WINDOW_S = 60.0
BLOCK_S = 60.0  # ... and it gets 429 for this long
MAX_TRACKED_IPS = 4096  # the limiter's memory stays bounded when many IPs fail
READ_METHODS = frozenset({"GET", "HEAD"})
OPEN_PATHS = frozenset(
    {"/", "/favicon.ico", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
OPEN_PREFIXES = ("/api/health/", "/console/")

Log = Callable[[str], None]
AsgiScope = MutableMapping[str, Any]  # an ASGI scope (not a token's Scope)
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Via(str, Enum):
    """How a request was let in (``/api/auth/whoami`` tells the page)."""

    TOKEN = "token"
    LOOPBACK = "loopback"  # no tokens configured and the client is this machine


@dataclass(frozen=True)
class Identity:
    """Who is asking: stored as ``request.state.identity`` for the routers."""

    name: str
    scope: Scope
    via: Via

    def may(self, needed: Scope) -> bool:
        return self.scope is Scope.ADMIN or needed is Scope.VIEWER

    def to_dict(self) -> dict[str, str]:
        return {"scope": self.scope.value, "name": self.name, "via": self.via.value}


class FailureLimiter:
    """Wrong tokens per client IP: :data:`MAX_FAILURES` within :data:`FAILURE_WINDOW_S`
    block that IP for :data:`BLOCK_S` seconds. Thread-safe; bounded memory."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_s: float = FAILURE_WINDOW_S,
        block_s: float = BLOCK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.block_s = block_s
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def blocked_for(self, ip: str) -> float:
        """Seconds ``ip`` stays blocked (0.0: not blocked)."""
        with self._lock:
            until = self._blocked_until.get(ip)
            if until is None:
                return 0.0
            left = until - self.clock()
            if left <= 0:
                del self._blocked_until[ip]
                return 0.0
            return left

    def failed(self, ip: str) -> bool:
        """Count a wrong token from ``ip``; True when this one blocks it."""
        with self._lock:
            now = self.clock()
            times = self._failures.setdefault(ip, deque())
            times.append(now)
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if len(times) >= self.max_failures:
                del self._failures[ip]
                self._blocked_until[ip] = now + self.block_s
                return True
            if len(self._failures) > MAX_TRACKED_IPS:
                self._forget_oldest(now)
            return False

    def _forget_oldest(self, now: float) -> None:
        for key in [k for k, t in self._failures.items() if not t or t[-1] <= now - self.window_s]:
            del self._failures[key]
        while len(self._failures) > MAX_TRACKED_IPS:
            del self._failures[next(iter(self._failures))]
        for key in [k for k, until in self._blocked_until.items() if until <= now]:
            del self._blocked_until[key]


def is_loopback(ip: str | None) -> bool:
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def is_open(method: str, path: str) -> bool:
    """Health, the page's files and the API description: readable without a token."""
    return method in READ_METHODS and (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES))


def needed_scope(method: str) -> Scope:
    return Scope.VIEWER if method in READ_METHODS else Scope.ADMIN


@dataclass(frozen=True)
class Refusal:
    """An answer instead of the endpoint's: status, one-line detail, extra headers."""

    status: int
    detail: str
    headers: dict[str, str] = field(default_factory=dict)


class AuthMiddleware:
    """The app-wide check (an ASGI middleware, so streamed answers pass through untouched):
    see the module docstring for the rule. Install with
    ``app.add_middleware(AuthMiddleware, tokens=..., log=...)``."""

    def __init__(
        self,
        app: Callable[[AsgiScope, Receive, Send], Awaitable[None]],
        tokens: TokenTable,
        log: Log,
        limiter: FailureLimiter | None = None,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.log = log
        self.limiter = limiter or FailureLimiter()

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the API has none: refuse rather than guess a scope
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        ip = client[0] if client else None
        headers = _headers(scope)
        outcome = self.decide(scope["method"], scope["path"], ip, headers)
        if isinstance(outcome, Refusal):
            await _answer(send, outcome)
            return
        if outcome is not None:
            scope.setdefault("state", {})["identity"] = outcome
        await self.app(scope, receive, send)

    def decide(
        self, method: str, path: str, ip: str | None, headers: Mapping[str, str]
    ) -> Identity | Refusal | None:
        """The identity let in, a refusal, or None for an open path (no identity needed)."""
        if is_open(method, path):
            return None
        needed = needed_scope(method)
        if not self.tokens.configured:
            if is_loopback(ip):
                return Identity("loopback", Scope.ADMIN, Via.LOOPBACK)
            return self._refuse(
                method,
                path,
                ip,
                403,
                "only this machine is served until api.tokens is configured",
                "no tokens configured; remote client",
            )
        key = ip or "unknown"
        blocked = self.limiter.blocked_for(key)
        if blocked > 0:
            return Refusal(
                429,
                f"too many wrong tokens from {key}; try again in {math.ceil(blocked)} s",
                {"Retry-After": str(math.ceil(blocked))},
            )  # not logged: the block was, once
        presented, source = _presented_token(method, headers)
        if presented is None:
            return self._refuse(method, path, ip, 401, source, "no token", bearer=True)
        token = self.tokens.match(presented)
        if token is None:
            refusal = self._refuse(
                method, path, ip, 401, "wrong token", f"wrong token ({source})", bearer=True
            )
            if self.limiter.failed(key):
                self.log(
                    f"api auth: {key} blocked for {self.limiter.block_s:g} s after "
                    f"{self.limiter.max_failures} wrong tokens"
                )
            return refusal
        identity = Identity(token.name, token.scope, Via.TOKEN)
        if not identity.may(needed):
            return self._refuse(
                method,
                path,
                ip,
                403,
                f"token '{token.name}' has scope viewer; {method} needs admin",
                f"viewer token '{token.name}' on a write",
            )
        return identity

    def _refuse(
        self,
        method: str,
        path: str,
        ip: str | None,
        status: int,
        detail: str,
        reason: str,
        bearer: bool = False,
    ) -> Refusal:
        self.log(f"api auth: {status} {_printable(method)} {_printable(path)} from {ip}: {reason}")
        headers = {"WWW-Authenticate": 'Bearer realm="adedge"'} if bearer else {}
        if status == 401:
            detail += "; send 'Authorization: Bearer <token>' (a token from api.tokens)"
        return Refusal(status, detail, headers)


def _presented_token(method: str, headers: Mapping[str, str]) -> tuple[str | None, str]:
    """The token and where it came from, or None and why none was taken."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), "bearer header"
        return None, "the Authorization header is not 'Bearer <token>'"
    cookie = _cookie(headers.get("cookie"))
    if cookie is not None:
        if method in READ_METHODS:
            return cookie, "cookie"
        return None, f"no token (the {COOKIE_NAME} cookie is accepted for GET and HEAD only)"
    return None, "no token"


def _cookie(header: str | None) -> str | None:
    """The ``adedge_token`` cookie's value: parsed by hand, as a malformed cookie of another
    application on the same host would make ``http.cookies`` drop them all."""
    for part in (header or "").split(";"):
        name, equals, value = part.strip().partition("=")
        if equals and name.strip() == COOKIE_NAME:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value or None
    return None


def _headers(scope: AsgiScope) -> dict[str, str]:
    """Request headers by lower-case name (the last of repeated ones; cookies joined)."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        found[name] = f"{found[name]}; {value}" if name == "cookie" and name in found else value
    return found


def _printable(text: str, limit: int = 200) -> str:
    """A path or method fit for one log line (no control characters, bounded)."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


async def _answer(send: Send, refusal: Refusal) -> None:
    body = json.dumps({"detail": refusal.detail}).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *((name.lower().encode(), value.encode()) for name, value in refusal.headers.items()),
    ]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def identity_of(state: Any) -> Identity | None:
    """``request.state``'s identity (None on an open path)."""
    return getattr(state, "identity", None)
