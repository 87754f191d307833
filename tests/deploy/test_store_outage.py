"""PostgreSQL stopped under load behind a real ``waimai api`` (cleanly, or as if it crashed).

The database is a throwaway cluster of the test's own (tests/support/pg_cluster.py), so the
machine's shared server is never stopped. Clients classify and label all along; while the
store is down every answer must be a 503 with ``store_unavailable`` (never a 500, never a hang),
the service must come back by itself, and every write it acknowledged must be stored once.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from core.models import registry
from core.store.tables import saved_id
from core.wiring import Core
from migrations import upgrade_schema
from tests.conftest import make_settings
from tests.deploy.processes import environment, supervised
from tests.support.pg_cluster import ClusterUnavailable, PgCluster, pg_cluster

pytestmark = pytest.mark.postgres

TENANT = "outage"
TEXTS = ["送餐太慢了，菜都凉了", "味道不错，分量足，还会再点", "一般般吧", "很快，好吃，量大"]
CLIENT_TIMEOUT_S = 5.0
RECOVERY_S = 3.0
"""How soon after the database is back every answer must be a success again."""


@dataclass(frozen=True)
class Answer:
    kind: str
    sent: float
    done: float
    status: int
    """0: no answer within the client's timeout, or the connection failed."""
    code: str = ""


@dataclass
class Load:
    """Clients that classify one review at a time and label some of the reviews they get back
    (each review at most once), remembering every answer and every acknowledged write."""

    http: httpx.AsyncClient
    answers: list[Answer] = field(default_factory=list)
    reviews: dict[int, str] = field(default_factory=dict)
    labels: dict[int, int] = field(default_factory=dict)
    """Acknowledged label event id → its review."""
    to_label: list[int] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, n: int) -> None:
        i = 0
        while not self.stopping.is_set():
            if i % 3 == 2 and self.to_label:
                ok = await self._label(self.to_label.pop(), n)
            else:
                ok = await self._classify(f"{TEXTS[i % len(TEXTS)]} #{n}-{i}")
            i += 1
            if not ok:
                await asyncio.sleep(0.05)  # a polite client backs off a little

    async def _classify(self, review: str) -> bool:
        answer, body = await self._send("classify", "/v1/classify", {"reviews": [{"text": review}]})
        if answer.status == 200:
            (result,) = body["results"]
            assert result["review_id"] not in self.reviews, "a review id acknowledged twice"
            self.reviews[result["review_id"]] = review
            self.to_label.append(result["review_id"])
        return answer.status == 200

    async def _label(self, review_id: int, n: int) -> bool:
        label = {"label": "negative", "actor": f"actor-{n % 3}"}
        answer, body = await self._send("label", f"/v1/reviews/{review_id}/feedback", label)
        if answer.status == 201:
            self.labels[body["id"]] = review_id
        return answer.status == 201

    async def _send(self, kind: str, path: str, payload: object) -> tuple[Answer, dict[str, Any]]:
        sent = time.monotonic()
        try:
            response = await self.http.post(path, json=payload)
        except httpx.HTTPError:
            answer, body = Answer(kind, sent, time.monotonic(), 0), {}
        else:
            body = response.json()
            error = body.get("error") if response.status_code >= 400 else None
            code = str(error.get("code", "")) if isinstance(error, dict) else ""
            answer = Answer(kind, sent, time.monotonic(), response.status_code, code)
        self.answers.append(answer)
        return answer, body


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    try:
        with pg_cluster() as running:
            yield running
    except ClusterUnavailable as reason:
        pytest.skip(f"no throwaway PostgreSQL cluster: {reason}")


@pytest.fixture
def store(cluster: PgCluster, trained_store: Path, tmp_path: Path) -> Iterator[Core]:
    """The cluster migrated, with the trained local model active."""
    shutil.copytree(trained_store / "models", tmp_path / "models")
    (artifact,) = [p.name for p in (tmp_path / "models").iterdir() if p.is_dir()]
    core = Core(make_settings(tmp_path, cluster.url()))
    upgrade_schema(core.engine)
    version = registry.register(core.engine, backend="local", model_ref=artifact, metrics={})
    registry.promote(core.engine, saved_id(version))
    yield core
    core.engine.dispose()


def stored(core: Core) -> tuple[Counter[int], Counter[str], Counter[int], Counter[int]]:
    """Predictions per review, reviews per text, label events per review, and per event id."""
    with core.engine.connect() as connection:
        reviews = connection.execute(
            text(
                "SELECT r.id, r.text, count(p.id) FROM review r "
                "LEFT JOIN prediction p ON p.review_id = r.id WHERE r.tenant = :t "
                "GROUP BY r.id, r.text"
            ),
            {"t": TENANT},
        ).all()
        labels = connection.execute(
            text(
                "SELECT e.id, e.review_id FROM label_event e JOIN review r ON r.id = e.review_id "
                "WHERE r.tenant = :t"
            ),
            {"t": TENANT},
        ).all()
    return (
        Counter({row[0]: row[2] for row in reviews}),
        Counter(row[1] for row in reviews),
        Counter(row[1] for row in labels),
        Counter(row[0] for row in labels),
    )


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_stopped_database_is_a_503_then_recovers_and_loses_no_acknowledged_write(
    cluster: PgCluster, store: Core, tmp_path: Path, mode: str
) -> None:
    key = store.clients.create(TENANT).key
    # A short key cache, so that key lookups meet the outage too.
    env = environment(tmp_path, cluster.url(), LOG_LEVEL="WARNING", API__KEY_CACHE_S="1")
    with supervised(tmp_path) as services:
        api = services.api("api", env)
        services.wait_ready(api)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            base_url=api.url, headers=headers, timeout=CLIENT_TIMEOUT_S
        ) as http:
            load = Load(http)
            clients = [asyncio.create_task(load.client(n)) for n in range(6)]
            await asyncio.sleep(2.0)
            await asyncio.to_thread(cluster.stop, mode)
            down = time.monotonic()
            await asyncio.sleep(2.5)
            not_ready = await http.get("/readyz")
            restarting = time.monotonic()
            await asyncio.to_thread(cluster.start)
            up = time.monotonic()
            await asyncio.sleep(RECOVERY_S + 2.0)
            ready = await http.get("/readyz")
            load.stopping.set()
            await asyncio.gather(*clients)
        assert api.process.poll() is None, api.output()
        output = api.output()

    answers = load.answers
    statuses = Counter(a.status for a in answers)
    assert set(statuses) <= {200, 201, 503}, statuses
    assert {a.code for a in answers if a.status == 503} <= {"store_unavailable"}
    outage = [a for a in answers if a.sent >= down and a.done <= restarting]
    assert {a.status for a in outage} == {503}, "only 503s while the store is down"
    assert {a.kind for a in outage} == {"classify", "label"}
    assert max(a.done - a.sent for a in outage) < 2.0, "a 503 comes at once, not after a wait"
    assert (not_ready.status_code, not_ready.json()["error"]["code"]) == (503, "store_unavailable")

    back = [a for a in answers if a.sent >= up]
    first_success = min(a.done for a in back if a.status in (200, 201))
    assert first_success - up < RECOVERY_S
    assert all(a.status in (200, 201) for a in back if a.sent >= up + RECOVERY_S)
    assert ready.status_code == 200
    assert "Traceback" not in output

    predictions, per_text, labels_per_review, label_ids = stored(store)
    failed = Counter(a.kind for a in answers if a.status not in (200, 201))
    assert all(predictions[i] == 1 for i in load.reviews), "an acknowledged review is missing"
    assert all(per_text[t] == 1 for t in load.reviews.values()), "a review stored twice"
    assert len(predictions) - len(load.reviews) <= failed["classify"]
    assert set(load.labels) <= set(label_ids), "an acknowledged label is missing"
    assert all(labels_per_review[r] == 1 for r in load.labels.values()), "a label stored twice"
    assert len(label_ids) - len(load.labels) <= failed["label"]
    assert len(load.reviews) > 100 and len(load.labels) > 30
