"""``/api/models``: the models the service runs, and swapping one for a new bundle.

A load is checked before anything changes (``swap.py``): the card and graphs' sha256, then
the new bundle scores the newest frame of each of the model's cameras. It goes in between
two batches, so no frame is lost or scored twice; a refused bundle answers 409 with the
reason and the running model goes on.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from adedge.runtime.serve.api_types import ConsoleView, LoadRequest, ModelInfo, SwapReport
from adedge.runtime.serve.http_api import console_view

router = APIRouter(prefix="/api/models", tags=["models"])


@router.get("", response_model=list[ModelInfo])
def models(view: ConsoleView = Depends(console_view)) -> list[ModelInfo]:
    """Every model: its bundle, card sha256, state, generation (swaps + 1), cameras."""
    return view.models_info()


@router.post(
    "/{name}/load",
    response_model=SwapReport,
    responses={404: {"description": "no such model"}, 409: {"description": "refused: why"}},
)
def load(name: str, request: LoadRequest, view: ConsoleView = Depends(console_view)) -> SwapReport:
    """Load ``bundle`` (a folder on the service's machine) for model ``name``, check it on
    recent frames and swap it in; the report says what was checked."""
    return view.load_model(name, request.bundle)
