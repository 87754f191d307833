import asyncio
import time

import pytest
from sqlmodel import Session, func, select

from api.main import create_app
from core.store.tables import Review, WebhookDelivery
from core.wiring import Core
from tests.api.conftest import body_of, client_for, issue, sign

EVENT = {"type": "reviews.created", "reviews": [{"text": "很快，好吃", "external_id": "o-1"}]}


def stored(core: Core) -> tuple[int, int]:
    with Session(core.engine) as session:
        reviews = session.exec(select(func.count()).where(Review.tenant == "acme")).one()
        deliveries = session.exec(select(func.count()).select_from(WebhookDelivery)).one()
    return reviews, deliveries


async def post(http, key, body: bytes, headers: dict[str, str]):
    return await http.post("/v1/webhooks/reviews", content=body, headers=key.headers | headers)


async def test_a_signed_delivery_is_classified_and_stored(http, core, acme):
    body = body_of(EVENT)
    response = await post(http, acme, body, sign(acme.webhook_secret, body, webhook_id="msg_1"))
    assert response.status_code == 200
    answer = response.json()
    assert answer["webhook_id"] == "msg_1"
    assert answer["results"][0]["label"] == "positive"
    assert answer["results"][0]["external_id"] == "o-1"
    assert "idempotent-replayed" not in response.headers
    assert stored(core) == (1, 1)


async def test_a_retry_gets_the_first_response_and_stores_nothing_twice(http, core, acme):
    body = body_of(EVENT)
    headers = sign(acme.webhook_secret, body, webhook_id="msg_1")
    first = await post(http, acme, body, headers)
    retried = await post(http, acme, body, sign(acme.webhook_secret, body, webhook_id="msg_1"))
    assert retried.status_code == 200
    assert retried.json() == first.json()
    assert retried.headers["idempotent-replayed"] == "true"
    assert stored(core) == (1, 1)


async def test_concurrent_duplicates_are_stored_once(http, core, acme):
    body = body_of({"reviews": [{"text": f"好吃 {i}"} for i in range(3)]})
    responses = await asyncio.gather(
        *(
            post(http, acme, body, sign(acme.webhook_secret, body, webhook_id="dup"))
            for _ in range(8)
        )
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    assert stored(core) == (3, 1)


async def test_a_forged_or_altered_delivery_is_a_401_and_stores_nothing(http, core, acme, globex):
    body = body_of(EVENT)
    altered = body.replace("好吃".encode(), "难吃".encode())
    attempts = [
        (altered, sign(acme.webhook_secret, body)),  # body changed after signing
        (body, sign(globex.webhook_secret, body)),  # someone else's secret
        (body, sign("whsec_" + "A" * 44, body)),  # a made-up secret
    ]
    for sent, headers in attempts:
        response = await post(http, acme, sent, headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"
        assert "signature" in response.json()["error"]["message"]
    assert stored(core) == (0, 0)


async def test_a_stale_timestamp_is_a_401(http, core, acme):
    body = body_of(EVENT)
    stale = sign(acme.webhook_secret, body, timestamp=int(time.time()) - 301)
    response = await post(http, acme, body, stale)
    assert response.status_code == 401
    assert "too old" in response.json()["error"]["message"]
    assert stored(core) == (0, 0)


async def test_missing_signature_headers_are_a_422_naming_them(http, acme):
    body = body_of(EVENT)
    headers = sign(acme.webhook_secret, body)
    del headers["webhook-signature"]
    response = await post(http, acme, body, headers)
    assert response.status_code == 422
    assert "webhook-signature" in response.json()["error"]["message"]


async def test_after_a_rotation_both_secrets_sign_until_the_next_one(http, core, acme):
    body = body_of({"reviews": [{"text": "还行"}]})
    new = core.clients.rotate_webhook_secret("acme")
    for secret in (acme.webhook_secret, new):
        assert (await post(http, acme, body, sign(secret, body))).status_code == 200
    newest = core.clients.rotate_webhook_secret("acme")
    assert (await post(http, acme, body, sign(newest, body))).status_code == 200
    assert (await post(http, acme, body, sign(acme.webhook_secret, body))).status_code == 401


async def test_a_header_with_several_signatures_passes_if_one_matches(http, acme):
    body = body_of(EVENT)
    headers = sign(acme.webhook_secret, body)
    forged = sign("whsec_" + "B" * 44, body, webhook_id=headers["webhook-id"])
    headers["webhook-signature"] = f"{forged['webhook-signature']} {headers['webhook-signature']}"
    assert (await post(http, acme, body, headers)).status_code == 200


async def test_the_body_is_checked_after_the_signature(http, acme):
    body = body_of({"reviews": [{"text": "好"}] * 300})
    response = await post(http, acme, body, sign(acme.webhook_secret, body))
    assert response.status_code == 422
    assert "reviews: List should have at most 256 items" in response.json()["error"]["message"]


async def test_the_same_webhook_id_with_another_body_is_a_409_naming_it(http, core, acme):
    body = body_of(EVENT)
    first = await post(http, acme, body, sign(acme.webhook_secret, body, webhook_id="msg_1"))
    other = body_of({"reviews": [{"text": "太慢了", "external_id": "o-2"}]})
    reused = await post(http, acme, other, sign(acme.webhook_secret, other, webhook_id="msg_1"))
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_conflict"
    assert "'msg_1'" in reused.json()["error"]["message"]
    assert "idempotent-replayed" not in reused.headers
    retried = await post(http, acme, body, sign(acme.webhook_secret, body, webhook_id="msg_1"))
    assert (retried.status_code, retried.headers["idempotent-replayed"]) == (200, "true")
    assert retried.json() == first.json()
    assert stored(core) == (1, 1)


@pytest.mark.parametrize("route", ["reviews", "labels"])
async def test_racing_deliveries_of_one_id_with_two_bodies_get_one_200_and_409s(
    store_core: Core, route: str
):
    """Two apps (as two server processes) on SQLite or PostgreSQL: no silent replay."""
    acme = issue(store_core, "acme")
    apps = [create_app(store_core), create_app(Core(store_core.settings.model_copy(deep=True)))]
    async with client_for(apps[0]) as http, client_for(apps[1]) as other_http:
        classified = await http.post(
            "/v1/classify",
            json={"reviews": [{"text": f"第{i}单，好吃"} for i in range(8)]},
            headers=acme.headers,
        )
        ids = [result["review_id"] for result in classified.json()["results"]]
        events = [
            {"reviews": [{"text": f"第{i}单，好吃", "external_id": f"race-{i}"}]}
            if route == "reviews"
            else {"labels": [{"review_id": ids[i], "label": "positive"}]}
            for i in range(2)
        ]
        bodies = [body_of(events[i % 2]) for i in range(8)]
        answers = await asyncio.gather(
            *(
                (http, other_http)[i // 4].post(
                    f"/v1/webhooks/{route}",
                    content=body,
                    headers=acme.headers | sign(acme.webhook_secret, body, webhook_id="race"),
                )
                for i, body in enumerate(bodies)
            )
        )
    (first,) = [
        a for a in answers if a.status_code == 200 and "idempotent-replayed" not in a.headers
    ]
    winning = bodies[answers.index(first)]
    for answer, body in zip(answers, bodies, strict=True):
        if body == winning:
            assert (answer.status_code, answer.json()) == (200, first.json())
        else:
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"]["code"] == "idempotency_conflict"
    with Session(store_core.engine) as session:
        assert session.exec(select(func.count()).select_from(WebhookDelivery)).one() == 1
