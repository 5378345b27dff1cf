"""The API's ``/api/version``, ``/api/config`` and ``/api/auth/whoami``: what runs, with what
settings, and who is asking (the page shows its edit controls to an admin only).

The config comes back with its secrets as ``***``; ``POST /api/config/reload`` re-reads the
file and applies it only once it validates: a bad file is refused (409) with the key path
and the running config keeps going. Access is checked by the app-wide middleware
(``auth.py``), not here.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel

from adedge.runtime.serve.api_types import ConsoleView, ReloadReport, VersionInfo
from adedge.runtime.serve.auth import identity_of
from adedge.runtime.serve.config import ServeConfig
from adedge.runtime.serve.http_api import console_view

router = APIRouter(prefix="/api", tags=["config"])


class WhoAmI(BaseModel):
    """The identity the request was let in with."""

    scope: str  # admin | viewer
    name: str  # the token's name in api.tokens, or "loopback"
    via: str  # token | loopback


@router.get("/version", response_model=VersionInfo)
def version(view: ConsoleView = Depends(console_view)) -> VersionInfo:
    """adedge's version, the API's, the node and the libraries that score."""
    return view.version_info()


@router.get("/config")
def config(view: ConsoleView = Depends(console_view)) -> dict[str, Any]:
    """The running config (secrets as ``***``)."""
    return view.redacted_config()


@router.get("/config/schema.json")
def config_schema() -> dict[str, Any]:
    """The JSON schema of the config file (as ``adedge serve --print-schema``)."""
    return ServeConfig.model_json_schema()


@router.post(
    "/config/reload",
    response_model=ReloadReport,
    responses={409: {"description": "the file does not validate: the key path and the fix"}},
)
def reload(request: Request, view: ConsoleView = Depends(console_view)) -> ReloadReport:
    """Re-read the config file; a bad one is refused and the running config keeps going."""
    who = identity_of(request.state)
    report = view.reload_config()
    request.app.state.log(
        f"api: config reloaded by {who.name if who else 'unknown'}: applied "
        f"{', '.join(report.applied) or 'nothing'}; restart needed for "
        f"{', '.join(report.restart_required) or 'nothing'}"
    )
    return report


@router.get("/auth/whoami", response_model=WhoAmI)
def whoami(request: Request) -> WhoAmI:
    """Who this request is (the page hides its edit controls from a viewer)."""
    who = identity_of(request.state)
    if who is None:  # the middleware lets no request here without one; be explicit anyway
        raise HTTPException(401, "no identity: send 'Authorization: Bearer <token>'")
    return WhoAmI(**who.to_dict())
