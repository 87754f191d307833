"""``POST /v1/classify``: classify up to 256 reviews and store them with their predictions."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import CallerDep
from api.deps import CoreDep, MetricsDep
from api.errors import ERROR_RESPONSES, responses
from api.schemas import ClassifyRequest, ClassifyResponse, verdicts
from core.tables import Source

router = APIRouter(prefix="/v1", tags=["classify"], responses=ERROR_RESPONSES)


@router.post("/classify", responses=responses(409, 503))
async def classify(
    body: ClassifyRequest, caller: CallerDep, core: CoreDep, metrics: MetricsDep
) -> ClassifyResponse:
    """Label each review 好评 (positive) or 差评 (negative).

    The reviews are stored with their predictions in one transaction: on any error nothing is
    stored. `fallback` is true where the active model failed and a fallback answered.
    """
    results = await core.classification.classify(
        [review.to_core() for review in body.reviews], source=Source.API, tenant=caller.name
    )
    metrics.classified(results)
    return ClassifyResponse(results=verdicts(results, body.reviews))
