"""``GET /v1/stats``: counts, positive rate and correction rate, overall and per model version."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import CallerDep, scope
from api.deps import CoreDep
from api.errors import ERROR_RESPONSES
from api.resources import StatsOut
from api.routes.reviews import MerchantId, Since
from api.schemas import since_utc
from core import reviews

router = APIRouter(prefix="/v1", tags=["stats"], responses=ERROR_RESPONSES)


@router.get("/stats")
def get_stats(
    caller: CallerDep, core: CoreDep, merchant_id: MerchantId = None, since: Since = None
) -> StatsOut:
    """Reviews by their current label; predictions, corrections and fallbacks per version."""
    return StatsOut.of(
        reviews.stats(
            core.engine, tenant=scope(caller), merchant_id=merchant_id, since=since_utc(since)
        )
    )
