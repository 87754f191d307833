import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, event

from core.classify import reviews
from core.classify.service import ReviewInput
from core.classify.stats import stats
from core.errors import NotFound
from core.store.tables import Source
from core.wiring import Core
from serving.base import Label

TEXTS = ["太难吃了，送得又慢", "好吃，还会再来", "一般般吧", "很快，好吃，味道足，量大"]


@pytest.fixture
def stored(core: Core):
    items = [
        ReviewInput(t, merchant_id="shop-1" if i % 2 else "shop-2") for i, t in enumerate(TEXTS)
    ]
    results = asyncio.run(core.classification.classify(items, source=Source.API, tenant="acme"))
    asyncio.run(
        core.classification.classify([ReviewInput("别人的评论")], source=Source.API, tenant="other")
    )
    return results


def test_a_review_comes_with_its_prediction_and_current_label(core: Core, stored):
    first = stored[0]
    record = reviews.get(core.engine, first.review_id, tenant="acme")
    assert record.prediction is not None
    assert record.prediction.id == first.prediction_id
    assert record.label == first.verdict.label
    assert not record.corrected
    with pytest.raises(NotFound):
        reviews.get(core.engine, first.review_id, tenant="other")

    flipped = Label(1 - first.verdict.label)
    asyncio.run(core.feedback.record(first.review_id, flipped, actor="m", channel=Source.API))
    record = reviews.get(core.engine, first.review_id)
    assert record.label == flipped
    assert record.corrected
    assert [e.label for e in reviews.history(core.engine, first.review_id)] == [int(flipped)]


def test_pages_are_newest_first_filtered_and_continue_by_cursor(core: Core, stored):
    records, cursor = reviews.page(core.engine, tenant="acme", limit=3)
    assert [r.review.id for r in records] == [s.review_id for s in reversed(stored)][:3]
    assert cursor == records[-1].review.id
    rest, end = reviews.page(core.engine, tenant="acme", limit=3, before_id=cursor)
    assert [r.review.id for r in rest] == [stored[0].review_id]
    assert end is None

    shop = reviews.page(core.engine, tenant="acme", merchant_id="shop-1")[0]
    assert {r.review.merchant_id for r in shop} == {"shop-1"}
    negative = reviews.page(core.engine, tenant="acme", label=Label.NEGATIVE)[0]
    assert negative and all(r.label == Label.NEGATIVE for r in negative)

    asyncio.run(
        core.feedback.record(stored[1].review_id, Label.NEGATIVE, actor="m", channel=Source.API)
    )
    corrected = reviews.page(core.engine, tenant="acme", corrected=True)[0]
    assert [r.review.id for r in corrected] == [stored[1].review_id]
    assert len(reviews.page(core.engine, tenant="acme", corrected=False)[0]) == 3


def test_stats_count_reviews_corrections_and_versions(core: Core, stored):
    before = stats(core.engine, tenant="acme")
    assert before.reviews == 4
    assert before.corrections == 0
    positive = sum(s.verdict.label == Label.POSITIVE for s in stored)
    assert before.positive == positive

    wrong = Label(1 - stored[0].verdict.label)
    labelled = asyncio.run(
        core.feedback.record(stored[0].review_id, wrong, actor="m", channel=Source.API)
    )
    event = labelled.event
    after = stats(core.engine, tenant="acme")
    assert (after.corrections, after.labelled) == (1, 1)
    assert after.correction_rate == pytest.approx(0.25)
    (version,) = after.by_version
    assert (version.predictions, version.corrections, version.fallbacks) == (4, 1, 0)

    assert event.id is not None
    asyncio.run(core.feedback.revoke(event.id))
    assert stats(core.engine, tenant="acme").corrections == 0
    assert stats(core.engine, tenant="acme", merchant_id="shop-1").reviews == 2
    assert stats(core.engine).reviews == 5


def test_the_queue_is_unlabelled_reviews_least_confident_first(core: Core, stored):
    queue = reviews.least_confident(core.engine, tenant="acme", limit=10)
    confidences = [r.prediction.confidence or 0.0 for r in queue if r.prediction]
    assert confidences == sorted(confidences)
    assert len(queue) == 4
    asyncio.run(
        core.feedback.record(queue[0].review.id or 0, Label.POSITIVE, actor="m", channel=Source.API)
    )
    assert len(reviews.least_confident(core.engine, tenant="acme", limit=10)) == 3


def query_plans(engine: Engine, read: Callable[[], Any]) -> list[str]:
    """SQLite's plan (EXPLAIN QUERY PLAN) of every statement ``read`` runs, a line a step."""
    statements: list[tuple[str, Any]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        read()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    with engine.connect() as connection:
        return [
            str(row[3])
            for statement, parameters in statements
            for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        ]


def test_one_review_and_a_page_are_read_by_index_without_scanning_predictions(core: Core, stored):
    """The latest prediction and label of a review are looked up for that review, not
    aggregated over the whole table first (15 ms a read at 36k predictions, 79 ms at 540k)."""
    review_id = stored[0].review_id
    reads = {
        "get": lambda: reviews.get(core.engine, review_id, tenant="acme"),
        "page": lambda: reviews.page(core.engine, tenant="acme", limit=2),
        "filtered page": lambda: reviews.page(
            core.engine, tenant="acme", label=Label.NEGATIVE, corrected=False
        ),
        "queue": lambda: reviews.least_confident(core.engine, tenant="acme"),
    }
    for name, read in reads.items():
        plan = query_plans(core.engine, read)
        assert plan, name
        whole_table = re.compile(r"^(SCAN (prediction|label_event)\b|MATERIALIZE)")
        assert [step for step in plan if whole_table.match(step)] == [], (name, plan)
    get = query_plans(core.engine, reads["get"])
    assert any(step.startswith("SEARCH review USING INTEGER PRIMARY KEY") for step in get), get
