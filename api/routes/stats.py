"""``GET /v1/stats``: counts, positive rate and correction rate, overall and per model version."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import CallerDep, scope
from api.deps import CoreDep
from api.errors import ERROR_RESPONSES, refusals
from api.params import SINCE_REFUSED, MerchantId, Since, since_utc
from api.records import StatsOut

router = APIRouter(prefix="/v1", tags=["stats"], responses=ERROR_RESPONSES)


@router.get(
    "/stats",
    responses=refusals(
        422, "A parameter is not valid; the message names it.", {"since": SINCE_REFUSED}
    ),
)
async def get_stats(
    caller: CallerDep, core: CoreDep, merchant_id: MerchantId = None, since: Since = None
) -> StatsOut:
    """Reviews by their current label; predictions, corrections and fallbacks per version."""
    return StatsOut.of(
        await core.stats.stats(
            tenant=scope(caller), merchant_id=merchant_id, since=since_utc(since)
        )
    )
