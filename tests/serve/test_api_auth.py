"""Who may ask the HTTP API what: a real Service, served by a real uvicorn (ApiServer) on a
free port, asked with httpx with and without tokens, over HTTP and HTTPS.

The service runs once for the module (one looping camera); each test serves it with its own
ApiServer (its own tokens, its own rate limiter). A test router beside the real ones counts
the writes that got through, so "nothing changed" is seen, not assumed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from serve_scenes import camera, running_service, service_config, write_scene

from adedge.errors import AdedgeError
from adedge.runtime.serve import api_config
from adedge.runtime.serve.auth import (
    BLOCK_S,
    COOKIE_NAME,
    MAX_FAILURES,
    FailureLimiter,
    is_loopback,
)
from adedge.runtime.serve.config import ApiConfig, parse_config
from adedge.runtime.serve.http_api import ApiServer, build_app
from adedge.runtime.serve.tokens import TokenTable, load_tokens

pytestmark = pytest.mark.runtime

ADMIN = "admin-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"
TIMEOUT = httpx.Timeout(20.0)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, bundle: Path) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("auth")
    video = write_scene(tmp / "scene.avi", 20, range(0))
    with running_service(service_config(tmp, {"line1": camera(video, loop=True)}, bundle)) as svc:
        yield svc


class Writes:
    """A write endpoint whose effect the test can see."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.router = APIRouter(prefix="/api/test")

        @self.router.post("/poke")
        def poke(what: str = "x") -> dict[str, int]:
            self.done.append(what)
            return {"writes": len(self.done)}


def token_files(tmp: Path) -> dict[str, Any]:
    (tmp / "admin.token").write_text(ADMIN + "\n")  # a trailing newline, as `echo` leaves
    return {
        "tokens": [
            {"name": "ops", "scope": "admin", "file": str(tmp / "admin.token")},
            {"name": "wall-screen", "scope": "viewer", "env": "ADEDGE_TEST_VIEWER"},
        ]
    }


@contextlib.contextmanager
def serving(
    service: Any, api: ApiConfig, tokens: TokenTable, writes: Writes, lines: list[str]
) -> Iterator[ApiServer]:
    app = build_app(
        service,
        service.metrics,
        routers=[api_config.router, writes.router],
        log=lines.append,
        tokens=tokens,
    )
    server = ApiServer(app, api, lines.append)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tokened(tmp_path: Path, service: Any) -> Iterator[tuple[ApiServer, Writes, list[str]]]:
    """The service served on 127.0.0.1 with an admin token (file) and a viewer one (env)."""
    api = ApiConfig.model_validate({"port": 0, **token_files(tmp_path)})
    tokens = load_tokens(api, env={"ADEDGE_TEST_VIEWER": f"  {VIEWER}  "})
    writes, lines = Writes(), []
    with serving(service, api, tokens, writes, lines) as server:
        yield server, writes, lines


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def threshold(client: httpx.Client, name: str = "line1") -> Any:
    stats = client.get("/api/stats", headers=bearer(VIEWER)).json()
    return next(cam for cam in stats["cameras"] if cam["name"] == name)["threshold"]


def test_a_viewer_reads_and_cannot_write_an_admin_can(tokened: Any) -> None:
    server, writes, lines = tokened
    with httpx.Client(base_url=server.api_url, timeout=TIMEOUT) as client:
        assert client.get("/api/stats", headers=bearer(VIEWER)).status_code == 200
        who = client.get("/api/auth/whoami", headers=bearer(VIEWER)).json()
        assert who == {"scope": "viewer", "name": "wall-screen", "via": "token"}
        before = threshold(client)

        refused = client.post("/api/test/poke", headers=bearer(VIEWER))
        assert refused.status_code == 403
        assert "scope viewer; POST needs admin" in refused.json()["detail"]
        patch = client.patch("/api/cameras/line1", json={"threshold": 0.01}, headers=bearer(VIEWER))
        assert patch.status_code == 403
        assert client.post("/api/config/reload", headers=bearer(VIEWER)).status_code == 403
        assert writes.done == [] and threshold(client) == before  # nothing changed

        assert client.post("/api/test/poke?what=a", headers=bearer(ADMIN)).json() == {"writes": 1}
        assert writes.done == ["a"]
        who = client.get("/api/auth/whoami", headers=bearer(ADMIN)).json()
        assert who == {"scope": "admin", "name": "ops", "via": "token"}
    failures = [line for line in lines if line.startswith("api auth: 403")]
    assert failures[0] == (
        "api auth: 403 POST /api/test/poke from 127.0.0.1: viewer token 'wall-screen' on a write"
    )
    assert any("PATCH /api/cameras/line1" in line for line in failures)
    assert not any(VIEWER in line or ADMIN in line for line in lines)


def test_no_token_or_a_wrong_one_is_401_even_from_this_machine(tokened: Any) -> None:
    """With tokens configured a loopback client needs one too (a proxy on this machine)."""
    server, writes, lines = tokened
    with httpx.Client(base_url=server.api_url, timeout=TIMEOUT) as client:
        for headers in ({}, bearer("not-the-token-at-all"), {"Authorization": f"Basic {ADMIN}"}):
            answer = client.get("/api/stats", headers=headers)
            assert answer.status_code == 401, headers
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert "Authorization: Bearer <token>" in answer.json()["detail"]
        assert client.post("/api/test/poke").status_code == 401
    assert writes.done == []
    assert "api auth: 401 GET /api/stats from 127.0.0.1: no token" in lines
    assert "api auth: 401 GET /api/stats from 127.0.0.1: wrong token (bearer header)" in lines
    assert not any("not-the-token-at-all" in line or ADMIN in line for line in lines)


def test_health_the_page_and_the_docs_are_open_for_reading_only(tokened: Any) -> None:
    server, writes, _ = tokened
    with httpx.Client(base_url=server.api_url, timeout=TIMEOUT) as client:
        assert client.get("/api/health/live").json() == {"status": "live"}
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 200
        assert client.post("/api/health/live").status_code == 401  # open means GET/HEAD
        assert client.get("/api/config/schema.json").status_code == 401


def test_five_wrong_tokens_block_the_client_ip_with_429(tokened: Any) -> None:
    """The client is the socket's peer: a forged X-Forwarded-For does not dodge the count."""
    server, _, lines = tokened
    with httpx.Client(base_url=server.api_url, timeout=TIMEOUT) as client:
        for attempt in range(MAX_FAILURES):
            headers = {**bearer("guess-guess-guess"), "X-Forwarded-For": f"203.0.113.{attempt}"}
            assert client.get("/api/stats", headers=headers).status_code == 401
        blocked = client.get("/api/stats", headers=bearer(ADMIN))  # even the right token
        assert blocked.status_code == 429
        assert 0 < int(blocked.headers["Retry-After"]) <= BLOCK_S
        assert client.get("/api/health/live").status_code == 200  # probes keep working
    assert f"api auth: 127.0.0.1 blocked for {BLOCK_S:g} s after {MAX_FAILURES} wrong tokens" in (
        lines
    )


def test_the_limiter_counts_per_ip_within_its_window() -> None:
    now = [1000.0]
    limiter = FailureLimiter(max_failures=3, window_s=60, block_s=60, clock=lambda: now[0])
    assert [limiter.failed("10.0.0.1") for _ in range(2)] == [False, False]
    now[0] += 61  # the first two fell out of the window
    assert [limiter.failed("10.0.0.1") for _ in range(2)] == [False, False]
    assert limiter.failed("10.0.0.1") is True
    assert limiter.blocked_for("10.0.0.1") == pytest.approx(60)
    assert limiter.blocked_for("10.0.0.2") == 0.0  # another client is not blocked
    assert limiter.failed("10.0.0.2") is False
    now[0] += 59.5
    assert limiter.blocked_for("10.0.0.1") == pytest.approx(0.5)
    now[0] += 1
    assert limiter.blocked_for("10.0.0.1") == 0.0
    assert limiter.failed("10.0.0.1") is False  # a fresh count after the block


def test_the_cookie_works_for_reads_never_for_writes(tokened: Any) -> None:
    server, writes, _ = tokened
    with httpx.Client(base_url=server.api_url, timeout=TIMEOUT) as client:
        cookie = {"Cookie": f'prefs={{"a": 1, b}}; {COOKIE_NAME}={ADMIN}; theme=dark'}
        who = client.get("/api/auth/whoami", headers=cookie).json()
        assert who == {"scope": "admin", "name": "ops", "via": "token"}
        assert client.head("/api/stats").status_code == 401
        # past the check with the cookie (FastAPI's GET routes then answer HEAD with 405)
        assert client.head("/api/stats", headers=cookie).status_code == 405
        refused = client.post("/api/test/poke", headers=cookie)
        assert refused.status_code == 401
        assert "cookie is accepted for GET and HEAD only" in refused.json()["detail"]
    assert writes.done == []


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (None: it has none)."""
    candidates: list[str] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10)
        candidates += found.stdout.split()
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.123", 9))  # UDP: picks the outgoing interface, sends nothing
        candidates.append(probe.getsockname()[0])
    for text in candidates:
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(text)
            if address.version == 4 and not address.is_loopback and not address.is_unspecified:
                return text
    return None


def test_without_tokens_only_this_machine_is_served_as_admin(service: Any) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to ask from")
    writes, lines = Writes(), []
    api = ApiConfig(host="0.0.0.0", port=0)
    with serving(service, api, load_tokens(api), writes, lines) as server:
        assert server.api_url == f"http://127.0.0.1:{server.port}"
        with httpx.Client(base_url=server.api_url, timeout=TIMEOUT) as local:
            who = local.get("/api/auth/whoami").json()
            assert who == {"scope": "admin", "name": "loopback", "via": "loopback"}
            assert local.post("/api/test/poke").status_code == 200
        remote_url = f"http://{address}:{server.port}"
        with httpx.Client(base_url=remote_url, timeout=TIMEOUT) as remote:
            refused = remote.get("/api/stats", headers=bearer(ADMIN))
            assert refused.status_code == 403
            assert "until api.tokens is configured" in refused.json()["detail"]
            assert remote.post("/api/test/poke").status_code == 403
            assert remote.get("/api/health/live").status_code == 200
    assert writes.done == ["x"]
    assert f"api auth: 403 GET /api/stats from {address}: no tokens configured; remote client" in (
        lines
    )


def self_signed(folder: Path, name: str = "api") -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_serves_https_with_the_configured_certificate(tmp_path: Path, service: Any) -> None:
    cert, key = self_signed(tmp_path)
    api = ApiConfig.model_validate(
        {"port": 0, "tls": {"cert": str(cert), "key": str(key)}, **token_files(tmp_path)}
    )
    tokens = load_tokens(api, env={"ADEDGE_TEST_VIEWER": VIEWER})
    writes, lines = Writes(), []
    with serving(service, api, tokens, writes, lines) as server:
        assert server.api_url == f"https://127.0.0.1:{server.port}"
        assert f"api: https://127.0.0.1:{server.port} (docs at /docs)" in lines
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=server.api_url, verify=trust, timeout=TIMEOUT) as client:
            assert client.get("/api/stats", headers=bearer(VIEWER)).status_code == 200
            assert client.get("/api/stats").status_code == 401
        with pytest.raises(httpx.HTTPError):  # plain HTTP gets no answer from a TLS port
            httpx.get(f"http://127.0.0.1:{server.port}/api/health/live", timeout=TIMEOUT)


def test_a_bad_tls_setting_is_one_line_before_binding(tmp_path: Path, service: Any) -> None:
    cert, _ = self_signed(tmp_path, "one")
    _, other_key = self_signed(tmp_path, "two")
    cases = [
        ({"cert": str(tmp_path / "absent.crt"), "key": str(other_key)}, "api.tls.cert: '"),
        ({"cert": str(cert), "key": str(other_key)}, "do not load together"),
    ]
    for tls, expected in cases:
        api = ApiConfig.model_validate({"port": 0, "tls": tls})
        server = ApiServer(build_app(service, service.metrics, tokens=TokenTable()), api, print)
        with pytest.raises(AdedgeError, match=expected) as raised:
            server.start()
        assert "\n" not in raised.value.one_line()


def config_with_tokens(tmp: Path, tokens: list[dict[str, Any]], bundle: Path) -> Any:
    data = service_config(tmp, {"c": camera(tmp / "none.avi")}, bundle, api={"tokens": tokens})
    return parse_config(data)


def test_a_token_that_cannot_be_read_is_one_line_naming_its_key(
    tmp_path: Path, bundle: Path
) -> None:
    short, empty, good = tmp_path / "short", tmp_path / "empty", tmp_path / "good"
    short.write_text("abc\n")
    empty.write_text("  \n")
    good.write_text(ADMIN)
    cases = [
        ({"file": str(tmp_path / "missing")}, "api.tokens[1] (b): cannot read token file '"),
        ({"env": "ADEDGE_UNSET_TOKEN"}, "environment variable ADEDGE_UNSET_TOKEN is not set"),
        ({"file": str(empty)}, f"api.tokens[1] (b): token file '{empty}' is empty"),
        ({"file": str(short)}, "the token has 3 characters; it needs 16"),
        ({"env": "SAME"}, "api.tokens[1] (b): the same token as api.tokens[0] (a)"),
        ({"env": "SPACED"}, "api.tokens[1] (b): the token has spaces or characters outside"),
    ]
    for source, expected in cases:
        entries = [
            {"name": "a", "scope": "admin", "file": str(good)},
            {"name": "b", "scope": "viewer", **source},
        ]
        config = config_with_tokens(tmp_path, entries, bundle)
        with pytest.raises(AdedgeError) as raised:
            load_tokens(config.api, env={"SAME": ADMIN, "SPACED": "a token with spaces in"})
        line = raised.value.one_line()
        assert expected in line
        assert "\n" not in line and ADMIN not in line


def test_build_app_reads_the_tokens_from_the_services_config(tmp_path: Path, bundle: Path) -> None:
    config = config_with_tokens(tmp_path, [{"name": "ops", "scope": "admin", "file": "x"}], bundle)

    class View:
        pass

    view = View()
    view.config = config
    with pytest.raises(AdedgeError, match=r"api.tokens\[0\] \(ops\): cannot read token file"):
        build_app(view, None)


@pytest.mark.parametrize(
    ("ip", "loopback"),
    [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("::ffff:127.0.0.1", True)]
    + [("192.0.2.2", False), ("::ffff:192.0.2.2", False), (None, False), ("not-an-ip", False)],
)
def test_loopback_clients(ip: str | None, loopback: bool) -> None:
    assert is_loopback(ip) is loopback
