"""The stats read earlier days from the worker's rollup and count the rest live: the same
figures either way, on SQLite and PostgreSQL, for every ``since``."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from sqlalchemy import update
from sqlmodel import Session, col

from core.classify.service import ReviewInput
from core.classify.stats import Stats, refresh, stats
from core.store.tables import Prediction, Review, Source, StatsRollup
from core.wiring import Core
from serving.base import Label
from tests.api.conftest import store_core  # noqa: F401  (the fixture)

NOW = datetime.now(UTC)
TODAY = datetime.combine(NOW.date(), time(), tzinfo=UTC)
TEXTS = ["太慢了，菜都凉了", "味道很好，还会再点", "一般般", "分量足，送得快", "难吃", "好吃"]


async def reviews_over_days(core: Core) -> list[int]:
    """Six reviews of two merchants, made 0 to 5 days ago (one a day, at 10:00 UTC), one of
    them corrected and one confirmed."""
    items = [ReviewInput(t, merchant_id=f"shop-{i % 2}") for i, t in enumerate(TEXTS)]
    results = await core.classification.classify(items, source=Source.API, tenant="acme")
    with Session(core.engine) as session:
        for days, result in enumerate(results):
            made = TODAY - timedelta(days=days) + timedelta(hours=10)
            session.execute(
                update(Review).where(col(Review.id) == result.review_id).values(created_at=made)
            )
            session.execute(
                update(Prediction)
                .where(col(Prediction.id) == result.prediction_id)
                .values(created_at=made)
            )
        session.commit()
    for result, right in ((results[3], False), (results[1], True)):
        label = result.verdict.label if right else Label(1 - result.verdict.label)
        await core.feedback.record(result.review_id, label, actor="m", channel=Source.API)
    return [r.review_id for r in results]


def every_view(core: Core) -> list[Stats]:
    sinces = [None, TODAY - timedelta(days=3), TODAY - timedelta(days=2, hours=5), NOW]
    return [
        stats(core.engine, tenant=tenant, merchant_id=merchant, since=since)
        for since in sinces
        for tenant, merchant in ((None, None), ("acme", None), ("acme", "shop-1"), ("other", None))
    ]


async def test_the_rollup_changes_no_figure(store_core: Core):  # noqa: F811
    ids = await reviews_over_days(store_core)
    live = every_view(store_core)
    assert live[0].reviews == 6 and live[0].corrections == 1 and live[0].labelled == 2

    through = refresh(store_core.engine)
    assert through == TODAY
    assert every_view(store_core) == live

    # A label on an earlier day's review shows in that day's counts after the next rollup.
    await store_core.feedback.record(ids[4], Label.POSITIVE, actor="m", channel=Source.API)
    stale = stats(store_core.engine)
    refresh(store_core.engine)
    fresh = stats(store_core.engine)
    assert fresh.labelled == stale.labelled + 1
    with Session(store_core.engine) as session:
        session.execute(update(StatsRollup).values(through=TODAY - timedelta(days=30)))
        session.commit()
    assert stats(store_core.engine) == fresh, "reads after an old watermark count the rest live"
