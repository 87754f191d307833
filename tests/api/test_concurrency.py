"""Parallel clients, on SQLite and PostgreSQL, through two apps as two server processes would."""

import asyncio

import pytest
from sqlmodel import Session, func, select

from api.main import create_app
from core.store.tables import LabelEvent, Prediction, Review
from core.wiring import Core
from tests.api.conftest import client_for, issue

CLIENTS, REQUESTS = 4, 12


def counts(core: Core) -> tuple[int, int, int]:
    with Session(core.engine) as session:
        return (
            session.exec(select(func.count()).select_from(Review)).one(),
            session.exec(select(func.count()).select_from(Prediction)).one(),
            session.exec(select(func.count()).select_from(LabelEvent)).one(),
        )


@pytest.mark.slow
async def test_no_review_or_label_is_lost_or_duplicated(store_core: Core):
    second_process = Core(store_core.settings.model_copy(deep=True))
    keys = [issue(store_core, f"shop{n}") for n in range(CLIENTS)]
    apps = [create_app(store_core), create_app(second_process)]

    async def client_session(n: int) -> tuple[list[int], list[int]]:
        key = keys[n]
        async with client_for(apps[n % 2]) as http:

            async def classify(i: int):
                reviews = [
                    {"text": f"第{i}单，好吃 {j}", "external_id": f"{i}-{j}"}
                    for j in range(1 + i % 3)
                ]
                response = await http.post(
                    "/v1/classify", json={"reviews": reviews}, headers=key.headers
                )
                assert response.status_code == 200, response.text
                return [r["review_id"] for r in response.json()["results"]]

            async def label(review_id: int):
                url = f"/v1/reviews/{review_id}/feedback"
                response = await http.post(url, json={"label": "negative"}, headers=key.headers)
                assert response.status_code == 201, response.text
                return response.json()["id"]

            batches = await asyncio.gather(*(classify(i) for i in range(REQUESTS)))
            review_ids = [r for batch in batches for r in batch]
            # the same orders again, concurrently: the same reviews, new predictions
            again = await asyncio.gather(*(classify(i) for i in range(REQUESTS)))
            assert [r for batch in again for r in batch] == review_ids
            labels = await asyncio.gather(*(label(r) for r in review_ids + review_ids[:5]))
            return review_ids, labels

    try:
        results = await asyncio.gather(*(client_session(n) for n in range(CLIENTS)))
    finally:
        second_process.engine.dispose()
    review_ids = [r for ids, _ in results for r in ids]
    label_ids = [label for _, labels in results for label in labels]
    per_client = sum(1 + i % 3 for i in range(REQUESTS))
    assert len(review_ids) == len(set(review_ids)) == CLIENTS * per_client
    assert len(label_ids) == len(set(label_ids)) == CLIENTS * (per_client + 5)
    assert counts(store_core) == (len(review_ids), 2 * len(review_ids), len(label_ids))
