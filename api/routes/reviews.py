"""``GET /v1/reviews/{id}`` and ``GET /v1/reviews`` (filtered, newest first, by cursor)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import CallerDep, scope
from api.deps import CoreDep
from api.errors import ERROR_RESPONSES, refusals, responses
from api.inputs import LabelName
from api.params import (
    NOT_A_CURSOR,
    SINCE_REFUSED,
    Cursor,
    Id,
    Limit,
    MerchantId,
    Since,
    next_cursor,
    read_cursor,
    since_utc,
)
from api.records import ReviewDetailOut, ReviewOut, ReviewPageOut
from core.labels.vocabulary import parse_label

router = APIRouter(prefix="/v1", tags=["reviews"], responses=ERROR_RESPONSES)

INVALID_PAGE = refusals(
    422,
    "A parameter is not valid; the message names it. `cursor` must be a `next_cursor` this "
    "API gave, as it gave it.",
    {
        "cursor": ("invalid_input", NOT_A_CURSOR),
        "since": SINCE_REFUSED,
    },
)


@router.get("/reviews/{review_id}", responses=responses(404))
async def get_review(review_id: Id, caller: CallerDep, core: CoreDep) -> ReviewDetailOut:
    """One review: its latest prediction, its current label and every human label, each with
    what became of it (`fate`)."""
    return ReviewDetailOut.of_labelled(await core.feedback.review(review_id, tenant=scope(caller)))


@router.get("/reviews", responses=INVALID_PAGE)
async def list_reviews(
    caller: CallerDep,
    core: CoreDep,
    merchant_id: MerchantId = None,
    label: Annotated[LabelName | None, Query(description="The current label.")] = None,
    corrected: Annotated[
        bool | None, Query(description="Whether a person's latest label corrects the model.")
    ] = None,
    since: Since = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> ReviewPageOut:
    """Your reviews, newest first, a page at a time."""
    records, before = await core.reviews.page(
        tenant=scope(caller),
        merchant_id=merchant_id,
        label=parse_label(label) if label else None,
        corrected=corrected,
        since=since_utc(since),
        before_id=read_cursor(cursor) if cursor else None,
        limit=limit,
    )
    return ReviewPageOut(
        items=[ReviewOut.of(record) for record in records],
        next_cursor=next_cursor(before) if before is not None else None,
    )
