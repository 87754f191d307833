"""What handlers are given: the core and the app's metrics, both set up by ``create_app``.

(Async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per
request for a dictionary lookup.)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.metrics import Metrics
from core.wiring import Core


async def get_core(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


CoreDep = Annotated[Core, Depends(get_core)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
