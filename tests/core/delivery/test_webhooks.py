import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, func, select

from core.access.clients import Caller
from core.classify.service import Classified, ReviewInput
from core.delivery.webhooks import Delivery
from core.errors import Conflict, InvalidInput, NotFound
from core.labels.feedback import LabelInput, Labelled
from core.models import registry
from core.store.tables import (
    LabelEvent,
    LabelKind,
    Prediction,
    Review,
    Source,
    WebhookDelivery,
    saved_id,
)
from core.wiring import Core
from migrations import upgrade_schema
from serving.base import Label
from tests.conftest import make_settings

BODY = b'{"reviews": "as signed"}'
"""The signed body bytes of a delivery (only their hash is kept)."""
OTHER = b'{"reviews": "something else"}'


def respond(results: list[Classified]) -> dict[str, Any]:
    return {"reviews": [r.review_id for r in results], "labels": [r.verdict.label for r in results]}


def count(core: Core, table, *where) -> int:
    with Session(core.engine) as session:
        return session.exec(select(func.count()).select_from(table).where(*where)).one()


def test_a_retried_delivery_gets_the_first_response_and_stores_nothing_more(core: Core):
    caller = asyncio.run(core.clients.authenticate(core.clients.create("acme").key))
    items = [ReviewInput("好吃"), ReviewInput("太慢了")]
    first = asyncio.run(core.webhooks.deliver(caller, "msg_1", items, respond, body=BODY))
    again = asyncio.run(core.webhooks.deliver(caller, "msg_1", items, respond, body=BODY))
    assert (first.replayed, again.replayed) == (False, True)
    assert again.response == first.response
    assert count(core, Review, Review.tenant == "acme") == 2
    assert count(core, WebhookDelivery) == 1


def test_the_same_webhook_id_from_another_client_is_another_delivery(core: Core):
    acme = asyncio.run(core.clients.authenticate(core.clients.create("acme").key))
    other = asyncio.run(core.clients.authenticate(core.clients.create("other").key))
    for caller in (acme, other):
        delivery = asyncio.run(
            core.webhooks.deliver(caller, "msg_1", [ReviewInput("好")], respond, body=BODY)
        )
        assert not delivery.replayed
    assert count(core, WebhookDelivery) == 2


def test_a_webhook_id_must_be_given(core: Core):
    caller = asyncio.run(core.clients.authenticate(core.clients.create("acme").key))
    with pytest.raises(InvalidInput, match="webhook-id"):
        asyncio.run(core.webhooks.deliver(caller, " ", [ReviewInput("好")], respond, body=BODY))


@pytest.fixture
def two_processes(db_url: str, trained_store: Path, tmp_path: Path):
    """Two cores (as two server processes would have) on one fresh store with a model."""
    shutil.copytree(trained_store / "models", tmp_path / "models")
    (artifact,) = [p.name for p in (tmp_path / "models").iterdir() if p.is_dir()]
    cores = [Core(make_settings(tmp_path, db_url)) for _ in range(2)]
    upgrade_schema(cores[0].engine)
    version = registry.register(cores[0].engine, backend="local", model_ref=artifact, metrics={})
    registry.promote(cores[0].engine, saved_id(version))
    yield cores
    for core in cores:
        core.engine.dispose()


Send = Callable[[Core, Caller, str], Awaitable[Delivery]]


def race_two_ids(two_processes: list[Core], key: str, send: Send) -> None:
    """Four deliveries of each of two webhook ids from each process at once: per id, one is
    processed and every other gets its response back."""

    async def race() -> list[Delivery]:
        callers = [await core.clients.authenticate(key) for core in two_processes]
        return list(
            await asyncio.gather(
                *(
                    send(core, caller, webhook_id)
                    for webhook_id in ("msg_a", "msg_b")
                    for core, caller in zip(two_processes, callers, strict=True)
                    for _ in range(4)
                )
            )
        )

    deliveries = asyncio.run(race())
    for same in (deliveries[:8], deliveries[8:]):
        assert sum(not d.replayed for d in same) == 1
        assert all(d.response == same[0].response for d in same)


def test_concurrent_duplicate_deliveries_are_stored_exactly_once(two_processes):
    first_core = two_processes[0]
    key = first_core.clients.create("acme").key
    items = [ReviewInput("好吃", external_id="o-1"), ReviewInput("太慢了", external_id="o-2")]

    race_two_ids(
        two_processes,
        key,
        lambda core, caller, webhook_id: core.webhooks.deliver(
            caller, webhook_id, items, respond, body=BODY
        ),
    )
    assert count(first_core, WebhookDelivery) == 2
    # Two deliveries of the same orders: the reviews are shared (external ids), predictions not.
    assert count(first_core, Review, Review.tenant == "acme") == 2
    assert count(first_core, Prediction) == 4


def respond_labels(stored: list[Labelled]) -> dict[str, Any]:
    return {"labels": [saved_id(s.event) for s in stored], "fates": [s.fate.code for s in stored]}


def test_a_retried_label_delivery_gets_the_first_response_and_stores_nothing_more(core: Core):
    caller = asyncio.run(core.clients.authenticate(core.clients.create("acme").key))
    stored = asyncio.run(
        core.classification.classify(
            [ReviewInput("好吃"), ReviewInput("太慢了")], source=Source.API, tenant="acme"
        )
    )
    labels = [LabelInput(s.review_id, Label.POSITIVE, "acme/shop-1") for s in stored]
    deliver = core.webhooks.deliver_labels
    first = asyncio.run(deliver(caller, "msg_1", labels, respond_labels, body=BODY))
    again = asyncio.run(deliver(caller, "msg_1", labels, respond_labels, body=BODY))
    assert (first.replayed, again.replayed) == (False, True)
    assert again.response == first.response
    assert first.response["fates"] == ["awaiting_corroboration"] * 2
    assert count(core, LabelEvent, LabelEvent.channel == Source.WEBHOOK) == 2
    assert count(core, WebhookDelivery) == 1


def test_a_label_delivery_that_fails_stores_neither_labels_nor_response(core: Core):
    caller = asyncio.run(core.clients.authenticate(core.clients.create("acme").key))
    (review,) = asyncio.run(
        core.classification.classify([ReviewInput("好吃")], source=Source.API, tenant="other")
    )
    labels = [LabelInput(review.review_id, Label.POSITIVE, "acme")]
    with pytest.raises(NotFound):
        asyncio.run(
            core.webhooks.deliver_labels(caller, "msg_1", labels, respond_labels, body=BODY)
        )
    assert count(core, LabelEvent, LabelEvent.channel == Source.WEBHOOK) == 0
    assert count(core, WebhookDelivery) == 0
    with pytest.raises(InvalidInput, match="webhook-id"):
        asyncio.run(core.webhooks.deliver_labels(caller, "", labels, respond_labels, body=BODY))


def test_concurrent_duplicate_label_deliveries_are_stored_exactly_once(two_processes):
    first_core = two_processes[0]
    key = first_core.clients.create("acme").key
    stored = asyncio.run(
        first_core.classification.classify(
            [ReviewInput("好吃"), ReviewInput("太慢了")], source=Source.API, tenant="acme"
        )
    )
    labels = [LabelInput(s.review_id, Label.NEGATIVE, "acme") for s in stored]

    race_two_ids(
        two_processes,
        key,
        lambda core, caller, webhook_id: core.webhooks.deliver_labels(
            caller, webhook_id, labels, respond_labels, body=BODY
        ),
    )
    assert count(first_core, WebhookDelivery) == 2
    assert count(first_core, LabelEvent, LabelEvent.kind != LabelKind.IMPORT) == 4


def send(core: Core, caller: Caller, kind: str, webhook_id: str, body: bytes, text: str):
    """A delivery of one review (``kind`` "reviews") or of a label on the review stored under
    ``text`` (``kind`` "labels"), signed over ``body``."""
    if kind == "reviews":
        return core.webhooks.deliver(caller, webhook_id, [ReviewInput(text)], respond, body=body)
    with Session(core.engine) as session:
        review = session.exec(select(Review).where(Review.text == text)).one()
    label = LabelInput(saved_id(review), Label.POSITIVE, caller.name)
    return core.webhooks.deliver_labels(caller, webhook_id, [label], respond_labels, body=body)


def stored_by(core: Core, kind: str) -> int:
    if kind == "reviews":
        return count(core, Review, Review.tenant == "acme")
    return count(core, LabelEvent, LabelEvent.channel == Source.WEBHOOK)


def labelled_reviews(core: Core, *texts: str) -> None:
    items = [ReviewInput(text) for text in texts]
    asyncio.run(core.classification.classify(items, source=Source.API, tenant="acme"))


@pytest.mark.parametrize("kind", ["reviews", "labels"])
def test_the_same_webhook_id_with_another_body_is_a_conflict_naming_it(two_processes, kind):
    core = two_processes[0]
    caller = asyncio.run(core.clients.authenticate(core.clients.create("acme").key))
    labelled_reviews(core, "好吃", "太慢了")
    first = asyncio.run(send(core, caller, kind, "msg_1", BODY, "好吃"))
    before = stored_by(core, kind)
    with pytest.raises(Conflict) as refused:
        asyncio.run(send(core, caller, kind, "msg_1", OTHER, "太慢了"))
    assert refused.value.code == "idempotency_conflict"
    assert "'msg_1'" in refused.value.message
    again = asyncio.run(send(core, caller, kind, "msg_1", BODY, "太慢了"))
    assert again == Delivery(first.response, replayed=True)
    assert (stored_by(core, kind), count(core, WebhookDelivery)) == (before, 1)


@pytest.mark.parametrize("kind", ["reviews", "labels"])
def test_racing_deliveries_of_one_id_with_two_bodies_one_wins_the_other_conflicts(
    two_processes, kind
):
    first_core = two_processes[0]
    key = first_core.clients.create("acme").key
    texts = [f"第{i}单，好吃" for i in range(8)]
    labelled_reviews(first_core, *texts)
    before = stored_by(first_core, kind)

    bodies = [(BODY, OTHER)[i % 2] for i in range(8)]

    async def race() -> list[Delivery | BaseException]:
        callers = [await core.clients.authenticate(key) for core in two_processes]
        outcomes: list[Delivery | BaseException] = await asyncio.gather(
            *(
                send(two_processes[i // 4], callers[i // 4], kind, "msg_race", body, texts[i])
                for i, body in enumerate(bodies)
            ),
            return_exceptions=True,
        )
        return outcomes

    outcomes = asyncio.run(race())
    (first,) = [o for o in outcomes if isinstance(o, Delivery) and not o.replayed]
    winning = bodies[outcomes.index(first)]
    for outcome, body in zip(outcomes, bodies, strict=True):
        if body == winning:
            assert isinstance(outcome, Delivery) and outcome.response == first.response
        else:  # never a silent replay of the other body's delivery
            assert isinstance(outcome, Conflict) and outcome.code == "idempotency_conflict"
    assert (stored_by(first_core, kind), count(first_core, WebhookDelivery)) == (before + 1, 1)


def test_a_delivery_stored_before_bodies_were_hashed_is_replayed_for_any_body(core: Core):
    caller = asyncio.run(core.clients.authenticate(core.clients.create("acme").key))
    with Session(core.engine) as session:
        session.add(WebhookDelivery(client_id=caller.id, webhook_id="old", response={"ok": 1}))
        session.commit()
    again = asyncio.run(send(core, caller, "reviews", "old", OTHER, "好吃"))
    assert again == Delivery({"ok": 1}, replayed=True)
    assert count(core, Review, Review.tenant == "acme") == 0
