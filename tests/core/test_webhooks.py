import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, func, select

from core import registry
from core.classification import Classified, ReviewInput
from core.db import upgrade_schema
from core.errors import InvalidInput
from core.tables import Prediction, Review, WebhookDelivery, saved_id
from core.webhooks import Delivery
from core.wiring import Core
from tests.conftest import make_settings


def respond(results: list[Classified]) -> dict[str, Any]:
    return {"reviews": [r.review_id for r in results], "labels": [r.verdict.label for r in results]}


def count(core: Core, table, *where) -> int:
    with Session(core.engine) as session:
        return session.exec(select(func.count()).select_from(table).where(*where)).one()


def test_a_retried_delivery_gets_the_first_response_and_stores_nothing_more(core: Core):
    caller = asyncio.run(core.clients.authenticate(core.clients.create("acme").key))
    items = [ReviewInput("好吃"), ReviewInput("太慢了")]
    first = asyncio.run(core.webhooks.deliver(caller, "msg_1", items, respond))
    again = asyncio.run(core.webhooks.deliver(caller, "msg_1", items[:1], respond))
    assert (first.replayed, again.replayed) == (False, True)
    assert again.response == first.response
    assert count(core, Review, Review.tenant == "acme") == 2
    assert count(core, WebhookDelivery) == 1


def test_the_same_webhook_id_from_another_client_is_another_delivery(core: Core):
    acme = asyncio.run(core.clients.authenticate(core.clients.create("acme").key))
    other = asyncio.run(core.clients.authenticate(core.clients.create("other").key))
    for caller in (acme, other):
        delivery = asyncio.run(core.webhooks.deliver(caller, "msg_1", [ReviewInput("好")], respond))
        assert not delivery.replayed
    assert count(core, WebhookDelivery) == 2


def test_a_webhook_id_must_be_given(core: Core):
    caller = asyncio.run(core.clients.authenticate(core.clients.create("acme").key))
    with pytest.raises(InvalidInput, match="webhook-id"):
        asyncio.run(core.webhooks.deliver(caller, " ", [ReviewInput("好")], respond))


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


def test_concurrent_duplicate_deliveries_are_stored_exactly_once(two_processes):
    first_core = two_processes[0]
    key = first_core.clients.create("acme").key
    items = [ReviewInput("好吃", external_id="o-1"), ReviewInput("太慢了", external_id="o-2")]

    async def race() -> list[Delivery]:
        callers = [await core.clients.authenticate(key) for core in two_processes]
        deliveries: list[Delivery] = await asyncio.gather(
            *(
                core.webhooks.deliver(caller, webhook_id, items, respond)
                for webhook_id in ("msg_a", "msg_b")
                for core, caller in zip(two_processes, callers, strict=True)
                for _ in range(4)
            )
        )
        return deliveries

    deliveries = asyncio.run(race())
    by_id = {"msg_a": deliveries[:8], "msg_b": deliveries[8:]}
    for same in by_id.values():
        assert sum(not d.replayed for d in same) == 1
        assert all(d.response == same[0].response for d in same)
    assert count(first_core, WebhookDelivery) == 2
    # Two deliveries of the same orders: the reviews are shared (external ids), predictions not.
    assert count(first_core, Review, Review.tenant == "acme") == 2
    assert count(first_core, Prediction) == 4
