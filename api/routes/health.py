"""Probes and metrics: ``/healthz`` (alive), ``/readyz`` (able to classify), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST as PROMETHEUS_TEXT

from api.answers import ErrorOut, HealthOut, ModelRefOut, ReadinessOut
from api.deps import CoreDep, MetricsDep
from core.store.tables import ModelStatus

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> HealthOut:
    """The process is up (it checks nothing else)."""
    return HealthOut()


@router.get(
    "/readyz",
    responses={503: {"model": ErrorOut, "description": "Cannot classify now."}},
)
async def readyz(core: CoreDep) -> ReadinessOut:
    """The store answers and a model version is loaded and able to classify."""
    version = await core.classification.ready()
    return ReadinessOut(
        model=ModelRefOut(version_id=version.id, backend=version.backend),
        fallback=version.status != ModelStatus.ACTIVE,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {PROMETHEUS_TEXT: {}}, "description": "Prometheus text."}},
)
def metrics(metrics: MetricsDep) -> Response:
    """Prometheus metrics: requests and latency by route and status, predictions by label and
    backend, fallbacks, backend errors, label events by kind."""
    return Response(metrics.exposition(), media_type=PROMETHEUS_TEXT)
