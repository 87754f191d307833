"""The API served by a real uvicorn on loopback, reached over real sockets."""

import asyncio
import gc
from collections.abc import Iterator

import httpx
import pytest

from api.main import create_app
from core.wiring import Core
from tests.api.conftest import Key, body_of, issue, sign
from tests.support.loopback import served_in_thread


@pytest.fixture
def server(core: Core) -> Iterator[str]:
    """uvicorn in a thread (lifespan on, as `waimai api` runs it); its base URL."""
    core.settings.api.rate_limit = "100000/second"
    with served_in_thread(create_app(core)) as base_url:
        yield base_url


@pytest.fixture
def shop(core: Core) -> Key:
    return issue(core, "shop")


def test_classify_feedback_and_metrics_over_a_real_socket(server: str, shop: Key):
    with httpx.Client(base_url=server, headers=shop.headers) as http:
        assert http.get("/readyz").json()["status"] == "ready"
        answer = http.post("/v1/classify", json={"reviews": [{"text": "太难吃了，送得又慢"}]})
        assert answer.status_code == 200
        (result,) = answer.json()["results"]
        assert result["label"] == "negative"
        label = http.post(f"/v1/reviews/{result['review_id']}/feedback", json={"label": "negative"})
        assert label.json()["kind"] == "confirmation"
        metrics = http.get("/metrics").text
        assert 'route="/v1/classify",status="200"' in metrics
        assert 'waimai_label_events_total{channel="api",kind="confirmation"} 1.0' in metrics


def test_a_signed_webhook_and_its_retry_over_a_real_socket(server: str, shop: Key):
    body = body_of({"reviews": [{"text": "很快，好吃，味道足，量大"}]})
    with httpx.Client(base_url=server, headers=shop.headers) as http:
        headers = sign(shop.webhook_secret, body, webhook_id="evt_1")
        first = http.post("/v1/webhooks/reviews", content=body, headers=headers)
        again = http.post("/v1/webhooks/reviews", content=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"


def test_limits_hold_over_a_real_socket(server: str, shop: Key):
    too_big = b'{"reviews": [{"text": "' + b"x" * (1024 * 1024) + b'"}]}'
    with httpx.Client(base_url=server, headers=shop.headers) as http:
        refused = http.post(
            "/v1/classify", content=too_big, headers={"content-type": "application/json"}
        )
        assert refused.status_code == 413
        assert refused.json()["error"]["code"] == "payload_too_large"
        assert http.post("/v1/classify", json={"reviews": []}).status_code == 422
        assert http.get("/v1/stats", headers={"Authorization": "Bearer nope"}).status_code == 401


async def test_thirty_two_parallel_clients_each_get_their_own_answers(server: str, shop: Key):
    async def client(n: int) -> list[int]:
        async with httpx.AsyncClient(base_url=server, headers=shop.headers) as http:
            review_ids = []
            for i in range(5):
                text = f"客户{n}的第{i}条：好吃"
                response = await http.post("/v1/classify", json={"reviews": [{"text": text}]})
                assert response.status_code == 200
                review_ids.append(response.json()["results"][0]["review_id"])
            return review_ids

    ids = await asyncio.gather(*(client(n) for n in range(32)))
    flat = [i for per_client in ids for i in per_client]
    assert len(set(flat)) == 32 * 5
    async with httpx.AsyncClient(base_url=server, headers=shop.headers) as http:
        stats = (await http.get("/v1/stats")).json()
    assert stats["reviews"] == 32 * 5


def test_start_up_moves_what_it_built_out_of_reach_of_the_garbage_collector(core: Core):
    """Full collections would otherwise scan every object the imports made, stalling requests."""
    gc.unfreeze()
    app = create_app(core)

    async def start_up() -> int:
        async with app.router.lifespan_context(app):
            return gc.get_freeze_count()

    assert asyncio.run(start_up()) > 10_000
