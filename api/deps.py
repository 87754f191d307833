"""What handlers are given: the core and the app's metrics, both set up by ``create_app``
(``core_of``/``metrics_of`` for code that has the request in hand).

(Async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per
request for a dictionary lookup.)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.metrics import Metrics
from core.wiring import Core


def core_of(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


def metrics_of(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_core(request: Request) -> Core:
    return core_of(request)


async def get_metrics(request: Request) -> Metrics:
    return metrics_of(request)


CoreDep = Annotated[Core, Depends(get_core)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
