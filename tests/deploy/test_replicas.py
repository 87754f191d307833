"""Two API replicas and two workers, each a real ``waimai`` process, on one PostgreSQL database.

What must hold when a platform's retries and merchants' labels land on any replica at once:
a webhook delivery is processed once, no acknowledged label is lost or doubled, and a retrain
asked through both replicas runs once, on the one worker that holds the leader lock.
"""

from __future__ import annotations

import asyncio
import csv
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import Session, col, func, select
from sqlmodel.sql.expression import SelectOfScalar

from core.models.dataset import prepare
from core.store.tables import (
    ApiClient,
    ClientRole,
    LabelEvent,
    ModelVersion,
    Prediction,
    RetrainRequest,
    Review,
    Snapshot,
    WebhookDelivery,
)
from core.wiring import Core
from migrations import upgrade_schema
from retrain.cycle import run_cycle
from retrain.worker import ADVISORY_LOCK_KEY
from tests.api.conftest import Key, body_of, issue, sign
from tests.conftest import DATASET, make_settings
from tests.deploy.processes import Service, Services, environment, supervised
from tests.support.loopback import postgres_reachable, scratch_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CHECK_EVERY_S = 1.2
LEADS = "leads the learning loop"
RETRAINED = "retrain local: version"


@dataclass(frozen=True)
class Fleet:
    core: Core
    """On the same database, for the test's own reads and keys."""
    apis: tuple[Service, Service]
    workers: tuple[Service, Service]
    services: Services


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for the module, dropped afterwards."""
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with scratch_database() as url:
        yield url


@pytest.fixture(scope="module")
def fleet(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two ``waimai api`` and two ``waimai worker`` processes on a migrated database, which is
    filled while they start: a sixth of the dataset and a model trained on it."""
    if not DATASET.is_file():
        pytest.skip(f"the dataset is not at {DATASET}")
    root = tmp_path_factory.mktemp("replicas")
    core = Core(make_settings(root, pg_url))
    upgrade_schema(core.engine)
    env = environment(
        root,
        pg_url,
        RETRAIN__LEADER_RETRY_S="0.5",
        RETRAIN__CHECK_EVERY_S=str(CHECK_EVERY_S),
        RETRAIN__LABEL_THRESHOLD="1000000",
    )
    try:
        with supervised(root) as services:
            apis = (services.api("api-a", env), services.api("api-b", env))
            workers = (services.worker("worker-a", env), services.worker("worker-b", env))
            subset = every_sixth_row(DATASET, root / "waimai_2k.csv")
            prepare(core.engine, str(subset), root / "data")
            assert asyncio.run(run_cycle(core, "local")).outcome == "promoted"
            services.wait_ready(*apis, timeout=120)
            services.wait_until(
                lambda: one_leads_one_waits(workers), "one worker leading, one waiting", 60
            )
            yield Fleet(core, apis, workers, services)
    finally:
        core.engine.dispose()


def one_leads_one_waits(workers: tuple[Service, Service]) -> bool:
    logs = [worker.output() for worker in workers]
    return sorted(LEADS in log for log in logs) == [False, True] and any(
        "another worker leads" in log for log in logs if LEADS not in log
    )


def every_sixth_row(source: Path, target: Path) -> Path:
    with source.open(encoding="utf-8", newline="") as file:
        header, *rows = list(csv.reader(file))
    with target.open("w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows([header, *rows[::6]])
    return target


def count(core: Core, query: SelectOfScalar[int]) -> int:
    with Session(core.engine) as session:
        return int(session.exec(query).one())


def unexpected(fleet: Fleet, responses: list[httpx.Response], *ok: int) -> str:
    """The answers that are not ``ok``, and what the processes logged: a failure's message."""
    wrong = [f"{r.status_code} {r.text[:300]}" for r in responses if r.status_code not in ok]
    return "\n".join(wrong[:5]) + "\n" + fleet.services.outputs()


async def classify(fleet: Fleet, api: Service, key: Key, texts: list[str]) -> list[int]:
    async with httpx.AsyncClient(base_url=api.url, headers=key.headers, timeout=60) as http:
        answer = await http.post("/v1/classify", json={"reviews": [{"text": t} for t in texts]})
    assert answer.status_code == 200, unexpected(fleet, [answer], 200)
    return [result["review_id"] for result in answer.json()["results"]]


async def test_a_delivery_posted_to_both_replicas_at_once_is_stored_once(fleet: Fleet):
    shop = issue(fleet.core, "shop-webhooks")
    bodies = {
        f"evt_{n}": body_of(
            {
                "type": "reviews.created",
                "reviews": [
                    {"text": f"第{n}单：很快，好吃", "external_id": f"order-{n}-a"},
                    {"text": f"第{n}单：菜都凉了", "external_id": f"order-{n}-b"},
                ],
            }
        )
        for n in range(20)
    }
    copies = [(webhook_id, fleet.apis[c % 2]) for c in range(4) for webhook_id in bodies]

    async with httpx.AsyncClient(timeout=60) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    f"{api.url}/v1/webhooks/reviews",
                    content=bodies[webhook_id],
                    headers=shop.headers
                    | sign(shop.webhook_secret, bodies[webhook_id], webhook_id=webhook_id),
                )
                for webhook_id, api in copies
            )
        )

    answers: dict[str, list[httpx.Response]] = {}
    assert {r.status_code for r in responses} == {200}, unexpected(fleet, responses, 200)
    for (webhook_id, _), response in zip(copies, responses, strict=True):
        answers.setdefault(webhook_id, []).append(response)
    review_ids = set()
    for webhook_id, same in answers.items():
        first = same[0].json()
        assert all(r.json() == first for r in same), f"{webhook_id} got different answers"
        assert [("idempotent-replayed" in r.headers) for r in same].count(False) == 1
        review_ids |= {result["review_id"] for result in first["results"]}
    assert len(review_ids) == 2 * len(bodies)

    mine = col(Review.tenant) == "shop-webhooks"
    deliveries = (
        select(func.count())
        .select_from(WebhookDelivery)
        .join(ApiClient)
        .where(ApiClient.name == "shop-webhooks")
    )
    assert count(fleet.core, deliveries) == len(bodies)
    assert count(fleet.core, select(func.count()).where(mine)) == len(review_ids)
    predictions = select(func.count()).select_from(Prediction).join(Review).where(mine)
    assert count(fleet.core, predictions) == len(review_ids)
    with Session(fleet.core.engine) as session:
        assert set(session.exec(select(Review.id).where(mine)).all()) == review_ids


async def test_labels_sent_through_both_replicas_at_once_are_each_stored_once(fleet: Fleet):
    shop = issue(fleet.core, "shop-labels")
    admin = issue(fleet.core, "admin-labels", ClientRole.ADMIN)
    review_ids = await classify(
        fleet, fleet.apis[0], shop, [f"第{i}份外卖，还行" for i in range(20)]
    )
    senders = [(shop, "a"), (shop, "b"), (shop, "c"), (admin, None)]
    posts = [
        (fleet.apis[(i + j) % 2], key, actor, review_id, "positive" if j % 2 else "negative")
        for i, review_id in enumerate(review_ids)
        for j, (key, actor) in enumerate(senders)
    ]

    async with httpx.AsyncClient(timeout=60) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    f"{api.url}/v1/reviews/{review_id}/feedback",
                    json={"label": label} | ({"actor": actor} if actor else {}),
                    headers=key.headers,
                )
                for api, key, actor, review_id, label in posts
            )
        )

    acknowledged = [r.json()["id"] for r in responses if r.status_code in (200, 201)]
    assert len(acknowledged) == len(posts), unexpected(fleet, responses, 200, 201)
    assert len(set(acknowledged)) == len(acknowledged)
    with Session(fleet.core.engine) as session:
        stored = session.exec(
            select(LabelEvent.id).where(col(LabelEvent.review_id).in_(review_ids))
        ).all()
    assert sorted(i for i in stored if i is not None) == sorted(acknowledged)
    assert len(stored) == len(acknowledged)


async def test_a_retrain_asked_through_both_replicas_runs_once_on_the_leader(fleet: Fleet):
    admin = issue(fleet.core, "admin-retrain", ClientRole.ADMIN)
    versions = select(func.count()).select_from(ModelVersion)
    snapshots = select(func.count()).select_from(Snapshot)
    requests = select(func.count()).select_from(RetrainRequest)
    before = {q: count(fleet.core, q) for q in (versions, snapshots, requests)}
    review_ids = await classify(
        fleet, fleet.apis[1], admin, [f"第{i}位老板说：一般般" for i in range(10)]
    )
    async with httpx.AsyncClient(headers=admin.headers, timeout=60) as http:
        # An admin's labels are trusted: the training data now differs from the active model's.
        for review_id in review_ids:
            url = f"{fleet.apis[1].url}/v1/reviews/{review_id}/feedback"
            answer = await http.post(url, json={"label": "negative"})
            assert answer.status_code == 201, unexpected(fleet, [answer], 201)
        tickets = await asyncio.gather(
            *(
                http.post(f"{fleet.apis[n % 2].url}/v1/retrain", json={"reason": f"ask {n}"})
                for n in range(8)
            )
        )
    assert {t.status_code for t in tickets} == {202}, unexpected(fleet, tickets, 202)
    assert len({t.json()["id"] for t in tickets}) == 1, "one request for all the askers"
    assert [t.json()["new"] for t in tickets].count(True) == 1
    request_id = tickets[0].json()["id"]

    def handled() -> bool:
        with Session(fleet.core.engine) as session:
            request = session.get(RetrainRequest, request_id)
            return request is not None and request.handled_at is not None

    fleet.services.wait_until(handled, "the retrain handled", timeout=120)
    await asyncio.sleep(3 * CHECK_EVERY_S)  # checks that would start the same retrain again

    with Session(fleet.core.engine) as session:
        request = session.get(RetrainRequest, request_id)
        assert request is not None
        assert request.outcome.startswith(("promoted", "rejected")), request.outcome
        newest = session.exec(select(ModelVersion).order_by(col(ModelVersion.id).desc())).first()
        assert newest is not None
        assert session.exec(
            select(Snapshot).where(Snapshot.content_hash == newest.snapshot)
        ).first()
    assert count(fleet.core, requests) == before[requests] + 1
    assert count(fleet.core, versions) == before[versions] + 1
    assert count(fleet.core, snapshots) == before[snapshots] + 1

    logs = [worker.output() for worker in fleet.workers]
    assert [LEADS in log for log in logs].count(True) == 1, fleet.services.outputs()
    assert Counter(log.count(RETRAINED) for log in logs) == Counter({0: 1, 1: 1})
    (leader,) = [log for log in logs if LEADS in log]
    assert RETRAINED in leader
    with fleet.core.engine.connect() as connection:
        holders = connection.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :k"),
            {"k": ADVISORY_LOCK_KEY},
        ).scalar()
    assert holders == 1
