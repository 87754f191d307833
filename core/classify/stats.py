"""Counts over reviews (by their current label) and over each model version's predictions:
``GET /v1/stats``, the bot's /stats, the operator page.

Counting a million reviews by their current label takes seconds, so the worker rolls the counts
up by day (UTC) every ``STATS__ROLLUP_EVERY_S``. A read takes the whole days the rollup holds
from its day tables and counts the rest live: the part of a day after ``since``, and everything
since the rollup's watermark (the start of the day it ran). A label given today to a review of
an earlier day therefore shows in that day's counts after the next rollup. Without a rollup
(no worker has run one), everything is counted live.

Past 300 lines: the live counts and the rollup are built from the same two queries, kept here
side by side so that they cannot drift apart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, delete, func, insert, literal_column, select
from sqlmodel import Session, col

from core.classify.reviews import LATEST_L, LATEST_P, scoped, with_latest, with_latest_label
from core.store.db import StoreService, unit_of_work
from core.store.tables import (
    LabelKind,
    Prediction,
    PredictionDay,
    Review,
    ReviewDay,
    StatsRollup,
    as_utc,
    utcnow,
)
from serving.base import Label


@dataclass(frozen=True)
class VersionStats:
    model_version_id: int | None
    backend: str
    predictions: int
    positive: int
    corrections: int
    fallbacks: int

    @property
    def positive_rate(self) -> float | None:
        return self.positive / self.predictions if self.predictions else None

    @property
    def correction_rate(self) -> float | None:
        return self.corrections / self.predictions if self.predictions else None


@dataclass(frozen=True)
class Stats:
    reviews: int
    positive: int
    labelled: int
    corrections: int
    by_version: Sequence[VersionStats]

    @property
    def positive_rate(self) -> float | None:
        return self.positive / self.reviews if self.reviews else None

    @property
    def correction_rate(self) -> float | None:
        return self.corrections / self.reviews if self.reviews else None

    def __add__(self, other: Stats) -> Stats:
        versions: defaultdict[tuple[int | None, str], list[int]] = defaultdict(lambda: [0] * 4)
        for v in (*self.by_version, *other.by_version):
            counts = versions[(v.model_version_id, v.backend)]
            for i, n in enumerate((v.predictions, v.positive, v.corrections, v.fallbacks)):
                counts[i] += n
        return Stats(
            self.reviews + other.reviews,
            self.positive + other.positive,
            self.labelled + other.labelled,
            self.corrections + other.corrections,
            [
                VersionStats(version, backend, *counts)
                for (version, backend), counts in sorted(
                    versions.items(), key=lambda item: (item[0][0] or 0, item[0][1])
                )
            ],
        )


NOTHING = Stats(0, 0, 0, 0, [])


def stats(
    engine: Engine,
    *,
    tenant: str | None = None,
    merchant_id: str | None = None,
    since: datetime | None = None,
) -> Stats:
    """Counts over reviews (by their current label), and per model version over its predictions.

    A correction counts once per review: when the review's latest human label corrects it.
    """
    since = as_utc(since) if since is not None else None
    with Session(engine) as session:
        rollup = session.get(StatsRollup, 1)
        through = as_utc(rollup.through) if rollup is not None else None
        if through is None or (since is not None and since >= through):
            return _live(session, tenant, merchant_id, since, None)
        counted = _live(session, tenant, merchant_id, through, None)
        first_day = None
        if since is not None:
            first_day = since.date() if since.time() == time() else since.date() + timedelta(1)
            counted += _live(session, tenant, merchant_id, since, _midnight(first_day))
        return counted + _rolled_up(session, tenant, merchant_id, first_day, through.date())


def refresh(engine: Engine, now: datetime | None = None) -> datetime:
    """Count every day before today (UTC) again into the day tables; returns the watermark."""
    through = _midnight((now or utcnow()).astimezone(UTC).date())
    with Session(engine) as session:
        day = _day_of(session)
        reviews = _totals(every_review=True, tenant=None, merchant_id=None)
        review_days = session.execute(
            reviews.add_columns(day(col(Review.created_at)), col(Review.tenant), _merchant())
            .where(col(Review.created_at) < through)
            .group_by(day(col(Review.created_at)), col(Review.tenant), _merchant())
        ).all()
        predictions = _per_version(every_review=True, tenant=None, merchant_id=None)
        prediction_days = session.execute(
            predictions.add_columns(
                day(col(Prediction.created_at)), col(Review.tenant), _merchant()
            )
            .where(col(Prediction.created_at) < through)
            .group_by(day(col(Prediction.created_at)), col(Review.tenant), _merchant())
        ).all()
    with unit_of_work(engine) as session:
        session.execute(delete(ReviewDay))
        session.execute(delete(PredictionDay))
        if review_days:
            session.execute(
                insert(ReviewDay),
                [
                    {"reviews": n, "positive": p, "labelled": lab, "corrections": c,
                     "day": _date(d), "tenant": t, "merchant_id": m}
                    for n, p, lab, c, d, t, m in review_days
                ],
            )  # fmt: skip
        if prediction_days:
            session.execute(
                insert(PredictionDay),
                [
                    {"model_version_id": v or 0, "backend": b, "predictions": n, "positive": p,
                     "corrections": c, "fallbacks": f, "day": _date(d), "tenant": t,
                     "merchant_id": m}
                    for v, b, n, p, c, f, d, t, m in prediction_days
                ],
            )  # fmt: skip
        session.merge(StatsRollup(id=1, through=through, refreshed_at=utcnow()))
    return through


class ReviewStats(StoreService):
    """The counts, for front doors; ``refresh`` for the worker's rollup job."""

    async def stats(
        self,
        *,
        tenant: str | None = None,
        merchant_id: str | None = None,
        since: datetime | None = None,
    ) -> Stats:
        return await self._run(stats, tenant=tenant, merchant_id=merchant_id, since=since)

    async def refresh(self) -> datetime:
        return await self._run(refresh)


def _totals(
    *,
    every_review: bool,
    tenant: str | None,
    merchant_id: str | None,
    since: datetime | None = None,
) -> Any:
    current = func.coalesce(col(LATEST_L.label), col(LATEST_P.label))
    return scoped(
        with_latest(
            select(
                func.count(col(Review.id)),
                func.count().filter(current == int(Label.POSITIVE)),
                func.count(col(LATEST_L.id)),
                func.count().filter(col(LATEST_L.kind) == LabelKind.CORRECTION),
            ).select_from(Review),
            every_review=every_review,
            since=since,
        ),
        tenant,
        merchant_id,
    )


def _per_version(
    *,
    every_review: bool,
    tenant: str | None,
    merchant_id: str | None,
    since: datetime | None = None,
    with_reviews: bool = True,
) -> Any:
    """``with_reviews`` joins each prediction's review, which scoping (or grouping by tenant)
    needs; every prediction's counts need none (no dataset review has a prediction)."""
    corrects = (col(LATEST_L.kind) == LabelKind.CORRECTION) & (
        col(LATEST_L.prediction_id) == col(Prediction.id)
    )
    query = select(
        col(Prediction.model_version_id),
        col(Prediction.backend),
        func.count(col(Prediction.id)),
        func.count().filter(col(Prediction.label) == int(Label.POSITIVE)),
        func.count().filter(corrects),
        func.count().filter(col(Prediction.fallback)),
    ).select_from(Prediction)
    if with_reviews:
        query = query.join(Review, col(Review.id) == col(Prediction.review_id))
    query = with_latest_label(
        query, every_review=every_review, since=since, review_id=col(Prediction.review_id)
    ).group_by(col(Prediction.model_version_id), col(Prediction.backend))
    return scoped(query, tenant, merchant_id) if with_reviews else query


def _live(
    session: Session,
    tenant: str | None,
    merchant_id: str | None,
    lo: datetime | None,
    hi: datetime | None,
) -> Stats:
    """Counted from the reviews and predictions made in [lo, hi): the latest prediction and
    label of each review looked up one by one for one merchant's reviews, in one pass over the
    rows made since ``lo`` for everyone's."""
    one_pass = tenant is None and merchant_id is None
    totals = _totals(every_review=one_pass, tenant=tenant, merchant_id=merchant_id, since=lo)
    per_version = _per_version(
        every_review=one_pass,
        tenant=tenant,
        merchant_id=merchant_id,
        since=lo,
        with_reviews=not one_pass,
    )
    if lo is not None:
        totals = totals.where(col(Review.created_at) >= lo)
        per_version = per_version.where(col(Prediction.created_at) >= lo)
    if hi is not None:
        totals = totals.where(col(Review.created_at) < hi)
        per_version = per_version.where(col(Prediction.created_at) < hi)
    reviews, positive, labelled, corrections = session.execute(totals).one()
    versions = [
        VersionStats(*row)
        for row in session.execute(per_version.order_by(col(Prediction.model_version_id))).all()
    ]
    return Stats(reviews, positive, labelled, corrections, versions)


def _rolled_up(
    session: Session,
    tenant: str | None,
    merchant_id: str | None,
    first: date | None,
    end: date,
) -> Stats:
    """The day tables' counts of the days in [first, end)."""

    def scope(table: type[ReviewDay] | type[PredictionDay]) -> list[ColumnElement[bool]]:
        where = [col(table.day) < end]
        if first is not None:
            where.append(col(table.day) >= first)
        if tenant is not None:
            where.append(col(table.tenant) == tenant)
        if merchant_id is not None:
            where.append(col(table.merchant_id) == merchant_id)
        return where

    counts = [col(ReviewDay.reviews), col(ReviewDay.positive), col(ReviewDay.labelled)]
    counts.append(col(ReviewDay.corrections))
    totals = session.execute(
        select(*(func.coalesce(func.sum(c), 0) for c in counts)).where(*scope(ReviewDay))
    ).one()
    version = col(PredictionDay.model_version_id)
    rows = session.execute(
        select(
            version,
            col(PredictionDay.backend),
            func.sum(col(PredictionDay.predictions)),
            func.sum(col(PredictionDay.positive)),
            func.sum(col(PredictionDay.corrections)),
            func.sum(col(PredictionDay.fallbacks)),
        )
        .where(*scope(PredictionDay))
        .group_by(version, col(PredictionDay.backend))
    ).all()
    versions = [VersionStats(v or None, b, *(int(n) for n in rest)) for v, b, *rest in rows]
    reviews, positive, labelled, corrections = (int(n) for n in totals)
    return Stats(reviews, positive, labelled, corrections, versions)


def _merchant() -> ColumnElement[str]:
    # Literals, not parameters: PostgreSQL groups by an expression only if it is the selected one.
    return func.coalesce(col(Review.merchant_id), literal_column("''"))


def _day_of(session: Session) -> Any:
    """The UTC day of a stored timestamp, in SQL (PostgreSQL keeps time zones, SQLite UTC text)."""
    if session.get_bind().dialect.name == "postgresql":
        return lambda column: func.date(func.timezone(literal_column("'UTC'"), column))
    return lambda column: func.date(column)


def _date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)
