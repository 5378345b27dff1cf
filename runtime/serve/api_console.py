"""The web console's files: ``GET /`` (the page) and ``GET /console/<file>`` (its scripts,
styles and icon), shipped in the package beside this module, with no build step and no
CDN: an edge box may have no internet.

Only plain files of the ``console`` folder are served, by a name made of safe characters
and an extension in :data:`CONTENT_TYPES`: a ``..``, an absolute path, a hidden file or a
link that leads outside the folder answers 404. The auth middleware leaves these routes
open (the page holds no data; it asks the API, which checks the token). ``no-cache`` makes
the browser revalidate, so a service upgraded in place serves its new page at once.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

CONSOLE_DIR = Path(__file__).parent / "console"
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
# The page loads only its own files and talks only to its own API: an injected script or
# a framing site gets nothing. (Styles set from scripts go through the CSSOM, which
# style-src allows; the page writes no inline style or script.)
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "same-origin",
}

router = APIRouter(tags=["console"])


def console_file(name: str, folder: Path = CONSOLE_DIR) -> Path:
    """The file ``name`` inside ``folder``, or HTTPException 404 for anything else (a name
    with a separator, ``..``, a hidden name, an unknown type, a link leading outside)."""
    suffix = Path(name).suffix.lower()
    if not _SAFE_NAME.match(name) or ".." in name or suffix not in CONTENT_TYPES:
        raise HTTPException(404, f"no console file {name!r}")
    root = folder.resolve()
    path = (root / name).resolve()
    if path.parent != root or not path.is_file():
        raise HTTPException(404, f"no console file {name!r}")
    return path


def _send(name: str) -> FileResponse:
    path = console_file(name)
    return FileResponse(path, media_type=CONTENT_TYPES[path.suffix.lower()], headers=HEADERS)


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The web console (cameras, events, camera settings, node)."""
    return _send(INDEX)


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> FileResponse:
    """Browsers ask for it on any page of the server (the console names its icon itself)."""
    return _send("icon.svg")


@router.get("/console/{name:path}", include_in_schema=False)
def console_asset(name: str) -> FileResponse:
    """A script, style sheet or icon of the console."""
    return _send(name)
