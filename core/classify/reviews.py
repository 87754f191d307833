"""Read side of reviews: one review with its history, filtered pages, the review queue (the
counts are ``core.classify.stats``), and `Reviews`, their async face for the front doors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, Select, func, select
from sqlalchemy.orm import Session, aliased
from sqlmodel import col

from core.errors import NotFound
from core.store.db import StoreService
from core.store.tables import LabelEvent, LabelKind, Prediction, Review, Source
from serving.base import Label

_Query = TypeVar("_Query", bound="Select[*tuple[Any, ...]]")
LATEST_P = aliased(Prediction, name="p")
LATEST_L = aliased(LabelEvent, name="l")
_newer_p = aliased(Prediction, name="newer_p")
_newer_l = aliased(LabelEvent, name="newer_l")

# Each review's latest prediction and latest live human label, looked up for that review by the
# indexes on ``review_id`` (newest first, one row): correlated subqueries, not a join on the
# latest id per review, which SQLite computed over the whole table for every read (15 ms a read
# at 36k predictions, 79 ms at 540k). Built once: building them took longer than the query.
_LATEST_PREDICTION_ID = (
    select(col(_newer_p.id))
    .where(col(_newer_p.review_id) == col(Review.id))
    .order_by(col(_newer_p.id).desc())
    .limit(1)
    .correlate(Review)
    .scalar_subquery()
)
_LATEST_LABEL_ID = (
    select(col(_newer_l.id))
    .where(
        col(_newer_l.review_id) == col(Review.id),
        col(_newer_l.kind) != LabelKind.IMPORT,
        col(_newer_l.revoked_at).is_(None),
    )
    .order_by(col(_newer_l.id).desc())
    .limit(1)
    .correlate(Review)
    .scalar_subquery()
)


@dataclass(frozen=True)
class ReviewRecord:
    review: Review
    prediction: Prediction | None
    """The latest prediction made for the review."""
    human: LabelEvent | None
    """The latest label a person gave that has not been revoked."""

    @property
    def label(self) -> Label | None:
        """What the review is now taken to be: the human label if any, else the prediction."""
        if self.human is not None:
            return Label(self.human.label)
        return Label(self.prediction.label) if self.prediction is not None else None

    @property
    def corrected(self) -> bool:
        return self.human is not None and self.human.kind == LabelKind.CORRECTION


# Over many reviews at once (an admin's stats, or a day's), the latest ids are found for all
# of them in one pass and joined instead: 1.2 s on PostgreSQL at 1M predictions, where as many
# correlated lookups as reviews took 3.2 s. Reviews made since a time have their predictions
# and labels made since then too, so a pass over those rows alone is enough for them.
def _latest_predictions(since: datetime | None) -> Any:
    query = select(col(Prediction.review_id), func.max(col(Prediction.id)).label("id"))
    if since is not None:
        query = query.where(col(Prediction.created_at) >= since)
    return query.group_by(col(Prediction.review_id)).subquery("latest_prediction")


def _latest_labels(since: datetime | None) -> Any:
    query = select(col(LabelEvent.review_id), func.max(col(LabelEvent.id)).label("id")).where(
        col(LabelEvent.kind) != LabelKind.IMPORT, col(LabelEvent.revoked_at).is_(None)
    )
    if since is not None:
        query = query.where(col(LabelEvent.created_at) >= since)
    return query.group_by(col(LabelEvent.review_id)).subquery("latest_label")


def with_latest_label(
    query: _Query,
    *,
    every_review: bool = False,
    since: datetime | None = None,
    review_id: Any = None,
) -> _Query:
    """Join each review's latest live human label (as ``LATEST_L``): looked up review by review,
    or, with ``every_review``, for all the reviews (made ``since``, if given) in one pass, on
    ``review_id`` (default: ``Review.id``)."""
    if not every_review:
        return query.outerjoin(LATEST_L, col(LATEST_L.id) == _LATEST_LABEL_ID)
    latest = _latest_labels(since)
    on = col(Review.id) if review_id is None else review_id
    return query.outerjoin(latest, latest.c.review_id == on).outerjoin(
        LATEST_L, col(LATEST_L.id) == latest.c.id
    )


def with_latest(
    query: _Query, *, every_review: bool = False, since: datetime | None = None
) -> _Query:
    """Join each review's latest prediction (as ``LATEST_P``) and latest live human label
    (``LATEST_L``), as ``with_latest_label`` does."""
    if not every_review:
        query = query.outerjoin(LATEST_P, col(LATEST_P.id) == _LATEST_PREDICTION_ID)
    else:
        latest = _latest_predictions(since)
        query = query.outerjoin(latest, latest.c.review_id == col(Review.id)).outerjoin(
            LATEST_P, col(LATEST_P.id) == latest.c.id
        )
    return with_latest_label(query, every_review=every_review, since=since)


_RECORDS = with_latest(select(Review, LATEST_P, LATEST_L).select_from(Review))
"""Reviews with their latest prediction and label, to filter."""


def scoped(query: _Query, tenant: str | None, merchant_id: str | None) -> _Query:
    query = query.where(col(Review.source) != Source.DATASET)
    if tenant is not None:
        query = query.where(col(Review.tenant) == tenant)
    if merchant_id is not None:
        query = query.where(col(Review.merchant_id) == merchant_id)
    return query


def get(engine: Engine, review_id: int, *, tenant: str | None = None) -> ReviewRecord:
    """One review with its latest prediction and label; NotFound outside the tenant."""
    with Session(engine) as session:
        return get_in(session, review_id, tenant=tenant)


def get_in(session: Session, review_id: int, *, tenant: str | None = None) -> ReviewRecord:
    """``get`` inside the caller's session."""
    query = _RECORDS.where(col(Review.id) == review_id)
    if tenant is not None:
        query = query.where(col(Review.tenant) == tenant)
    row = session.execute(query).first()
    if row is None:
        raise NotFound(f"review {review_id} does not exist")
    return ReviewRecord(*row)


def history(engine: Engine, review_id: int) -> list[LabelEvent]:
    """Every human label of a review, revoked ones included, oldest first."""
    with Session(engine) as session:
        return history_in(session, review_id)


def history_in(session: Session, review_id: int) -> list[LabelEvent]:
    """``history`` inside the caller's session."""
    return list(
        session.scalars(
            select(LabelEvent)
            .where(col(LabelEvent.review_id) == review_id, col(LabelEvent.kind) != LabelKind.IMPORT)
            .order_by(col(LabelEvent.id))
        ).all()
    )


def page(
    engine: Engine,
    *,
    tenant: str | None = None,
    merchant_id: str | None = None,
    label: Label | None = None,
    corrected: bool | None = None,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> tuple[list[ReviewRecord], int | None]:
    """Newest first; returns the records and the id to continue before (None at the end)."""
    query = scoped(_RECORDS, tenant, merchant_id)
    if since is not None:
        query = query.where(col(Review.created_at) >= since)
    if before_id is not None:
        query = query.where(col(Review.id) < before_id)
    if label is not None:
        query = query.where(func.coalesce(LATEST_L.label, LATEST_P.label) == int(label))
    if corrected is True:
        query = query.where(col(LATEST_L.kind) == LabelKind.CORRECTION)
    elif corrected is False:
        query = query.where(func.coalesce(LATEST_L.kind, "") != LabelKind.CORRECTION)
    with Session(engine) as session:
        rows = session.execute(query.order_by(col(Review.id).desc()).limit(limit + 1)).all()
    records = [ReviewRecord(*row) for row in rows[:limit]]
    more = len(rows) > limit
    return records, (records[-1].review.id if more and records else None)


def least_confident(
    engine: Engine, *, tenant: str, since: datetime | None = None, limit: int = 5
) -> list[ReviewRecord]:
    """Recent reviews nobody has labelled yet, least confident prediction first."""
    query = scoped(_RECORDS, tenant, None).where(
        col(LATEST_P.confidence).is_not(None), col(LATEST_L.id).is_(None)
    )
    if since is not None:
        query = query.where(col(Review.created_at) >= since)
    with Session(engine) as session:
        rows = session.execute(
            query.order_by(col(LATEST_P.confidence), col(Review.id).desc()).limit(limit)
        ).all()
    return [ReviewRecord(*row) for row in rows]


class Reviews(StoreService):
    """What front doors read: pages of reviews, the least confident, and the counts."""

    async def page(
        self,
        *,
        tenant: str | None = None,
        merchant_id: str | None = None,
        label: Label | None = None,
        corrected: bool | None = None,
        since: datetime | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> tuple[list[ReviewRecord], int | None]:
        return await self._run(
            page,
            tenant=tenant,
            merchant_id=merchant_id,
            label=label,
            corrected=corrected,
            since=since,
            before_id=before_id,
            limit=limit,
        )

    async def least_confident(
        self, *, tenant: str, since: datetime | None = None, limit: int = 5
    ) -> list[ReviewRecord]:
        return await self._run(least_confident, tenant=tenant, since=since, limit=limit)
