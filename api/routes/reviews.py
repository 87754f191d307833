"""``GET /v1/reviews/{id}`` and ``GET /v1/reviews`` (filtered, newest first, by cursor)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.auth import CallerDep, scope
from api.deps import CoreDep
from api.errors import ERROR_RESPONSES, responses
from api.resources import ReviewDetail, ReviewOut, ReviewPage
from api.schemas import ID_PATTERN, MAX_ID, LabelName, since_utc
from core import reviews
from core.errors import InvalidInput
from core.labels import parse_label

router = APIRouter(prefix="/v1", tags=["reviews"], responses=ERROR_RESPONSES)

Id = Annotated[int, Path(ge=1, le=MAX_ID)]
MerchantId = Annotated[str | None, Query(min_length=1, max_length=128, pattern=ID_PATTERN)]
Since = Annotated[datetime | None, Query(description="Only reviews stored at or after this time.")]


@router.get("/reviews/{review_id}", responses=responses(404))
def get_review(review_id: Id, caller: CallerDep, core: CoreDep) -> ReviewDetail:
    """One review: its latest prediction, its current label and every human label."""
    record = reviews.get(core.engine, review_id, tenant=scope(caller))
    return ReviewDetail.of_history(record, reviews.history(core.engine, review_id))


@router.get("/reviews")
def list_reviews(
    caller: CallerDep,
    core: CoreDep,
    merchant_id: MerchantId = None,
    label: Annotated[LabelName | None, Query(description="The current label.")] = None,
    corrected: Annotated[
        bool | None, Query(description="Whether a person's latest label corrects the model.")
    ] = None,
    since: Since = None,
    cursor: Annotated[
        str | None, Query(max_length=32, description="`next_cursor` of the page before.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ReviewPage:
    """Your reviews, newest first, a page at a time."""
    records, before = reviews.page(
        core.engine,
        tenant=scope(caller),
        merchant_id=merchant_id,
        label=parse_label(label) if label else None,
        corrected=corrected,
        since=since_utc(since),
        before_id=_read_cursor(cursor) if cursor else None,
        limit=limit,
    )
    return ReviewPage(
        items=[ReviewOut.of(record) for record in records],
        next_cursor=_cursor(before) if before is not None else None,
    )


def _cursor(before_id: int) -> str:
    return base64.urlsafe_b64encode(f"before:{before_id}".encode()).decode().rstrip("=")


def _read_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, number = text.partition(":")
        before_id = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("cursor: not a cursor this API gave") from None
    if kind != "before" or not 1 <= before_id <= MAX_ID:
        raise InvalidInput("cursor: not a cursor this API gave")
    return before_id
