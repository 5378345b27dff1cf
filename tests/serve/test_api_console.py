"""The console's files as the router serves them: the page and its modules with their
types and headers, nothing outside the folder, and nothing fetched from the internet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from adedge.runtime.serve import api_console
from adedge.runtime.serve.api_console import CONSOLE_DIR, console_file

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(api_console.router)
    return TestClient(app)


def test_page_and_modules_are_served_with_their_types_and_headers(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/console/app.js">' in page.text
    kinds = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for path in sorted(CONSOLE_DIR.iterdir()):
        answer = client.get(f"/console/{path.name}")
        assert answer.status_code == 200, path.name
        assert answer.content == path.read_bytes()
        if path.suffix in kinds:
            assert answer.headers["content-type"].startswith(kinds[path.suffix]), path.name
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_every_file_the_page_loads_exists_and_none_comes_from_elsewhere() -> None:
    """A missing module would be a console error; a CDN would fail on a box offline."""
    texts = {path.name: path.read_text() for path in CONSOLE_DIR.iterdir()}
    wanted = set(re.findall(r'(?:src|href)="/console/([^"]+)"', texts["index.html"]))
    for name, text in texts.items():
        if name.endswith(".js"):
            wanted |= set(re.findall(r'^import .* from "\./([^"]+)";$', text, re.M))
            wanted |= set(re.findall(r'^} from "\./([^"]+)";$', text, re.M))
        external = re.findall(r'(?:src=|href=|url\(|from )["\']?(?:https?:)?//', text)
        assert not external, f"{name} loads from another site: {external}"
    modules = {"api.js", "dom.js", "charts.js", "cameras.js", "events.js", "node.js"}
    assert {"app.js", "style.css", "icon.svg", *modules} <= wanted
    assert wanted <= set(texts), f"missing: {wanted - set(texts)}"


@pytest.mark.parametrize(
    "path",
    [
        "/console/..%2fapi_console.py",
        "/console/%2e%2e/%2e%2e/config.py",
        "/console/../api_console.py",
        "/console//etc/passwd",
        "/console/%2Fetc%2Fpasswd",
        "/console/.hidden.js",
        "/console/app.py",
        "/console/missing.js",
        "/console/",
    ],
)
def test_nothing_outside_the_console_folder_is_served(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 404, (path, answer.text[:80])
    assert "import" not in answer.text


def test_a_link_leading_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "console"
    folder.mkdir()
    (tmp_path / "secret.js").write_text("secret")
    (folder / "escape.js").symlink_to(tmp_path / "secret.js")
    (folder / "app.js").write_text("ok")
    assert console_file("app.js", folder) == (folder / "app.js").resolve()
    for name in ("escape.js", "../secret.js", str(tmp_path / "secret.js"), "sub/app.js"):
        with pytest.raises(HTTPException) as refused:
            console_file(name, folder)
        assert refused.value.status_code == 404


def test_favicon_is_the_console_icon(client: TestClient) -> None:
    answer = client.get("/favicon.ico")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("image/svg+xml")
    assert answer.content == (CONSOLE_DIR / "icon.svg").read_bytes()
