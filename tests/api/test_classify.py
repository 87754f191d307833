from collections.abc import AsyncIterator

import pytest
from sqlmodel import Session, func, select

from api.main import create_app
from core.models import registry
from core.store.tables import ModelStatus, Prediction, Review, saved_id
from core.wiring import Core
from tests.api.conftest import client_for, issue

NEGATIVE, POSITIVE = "送餐太慢了，菜都凉了", "味道不错，分量足，还会再点"


def count(core: Core, table, *where) -> int:
    with Session(core.engine) as session:
        return session.exec(select(func.count()).select_from(table).where(*where)).one()


async def test_each_review_gets_a_verdict_and_is_stored(http, core, acme):
    body = {
        "reviews": [
            {"text": NEGATIVE, "external_id": "order-1", "merchant_id": "shop-1"},
            {"text": POSITIVE},
        ]
    }
    response = await http.post("/v1/classify", json=body, headers=acme.headers)
    assert response.status_code == 200
    first, second = response.json()["results"]
    assert (first["label"], first["label_zh"]) == ("negative", "差评")
    assert (second["label"], second["label_zh"]) == ("positive", "好评")
    assert first["external_id"] == "order-1" and second["external_id"] is None
    assert 0.5 <= first["confidence"] <= 1
    active = registry.active(core.engine)
    assert first["model"] == {"version_id": active.id, "backend": "local"}
    assert first["fallback"] is False
    with Session(core.engine) as session:
        review = session.get(Review, first["review_id"])
        assert review is not None
        assert (review.tenant, review.merchant_id, review.source) == ("acme", "shop-1", "api")
        prediction = session.get(Prediction, first["prediction_id"])
        assert prediction is not None and prediction.review_id == review.id


async def test_the_same_external_id_is_the_same_review(http, acme):
    body = {"reviews": [{"text": POSITIVE, "external_id": "order-9"}]}
    first = (await http.post("/v1/classify", json=body, headers=acme.headers)).json()
    again = (await http.post("/v1/classify", json=body, headers=acme.headers)).json()
    assert first["results"][0]["review_id"] == again["results"][0]["review_id"]
    assert first["results"][0]["prediction_id"] != again["results"][0]["prediction_id"]


@pytest.mark.parametrize(
    ("reviews", "message"),
    [
        (
            [{"text": "好"}, {"text": "好" * 2001}],
            "reviews[1].text has 2001 characters; at most 2000 are allowed",
        ),
        ([{"text": "好"}, {"text": ""}], "reviews[1].text: String should have at least 1"),
        ([{"text": "好"}, {"text": "  \n "}], "reviews[1].text is empty"),
        ([{"text": "好"}, {"text": "a\u0000b"}], "reviews[1].text looks like binary"),
        ([{"text": "好"}] * 257, "reviews: List should have at most 256 items"),
        ([], "reviews: List should have at least 1 item"),
        ([{"text": "好", "stars": 5}], "reviews[0].stars: Extra inputs are not permitted"),
        ([{"text": "好", "external_id": "a\nb"}], "reviews[0].external_id: String should match"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field_and_index(http, core, acme, reviews, message):
    before = count(core, Review)
    response = await http.post("/v1/classify", json={"reviews": reviews}, headers=acme.headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert message in error["message"]
    assert count(core, Review) == before


async def test_a_batch_of_256_is_accepted(http, acme):
    body = {"reviews": [{"text": f"{POSITIVE} {i}"} for i in range(256)]}
    response = await http.post("/v1/classify", json=body, headers=acme.headers)
    assert response.status_code == 200
    assert len(response.json()["results"]) == 256


async def test_malformed_json_is_a_422_in_the_same_shape(http, acme):
    headers = acme.headers | {"content-type": "application/json"}
    response = await http.post("/v1/classify", content=b'{"reviews": [', headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("body: not valid JSON")


async def test_a_body_that_is_not_utf8_json_is_a_422_and_another_media_type_a_415(http, core, acme):
    before = count(core, Review)
    json_type = acme.headers | {"content-type": "application/json"}
    latin1 = '{"reviews": [{"text": "très bon"}]}'.encode("latin-1")
    response = await http.post("/v1/classify", content=latin1, headers=json_type)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("body: not valid JSON")
    text_type = acme.headers | {"content-type": "text/plain"}
    body = '{"reviews": [{"text": "好吃"}]}'.encode()
    response = await http.post("/v1/classify", content=body, headers=text_type)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert "application/json" in response.json()["error"]["message"]
    assert count(core, Review) == before
    for media_type in ({"content-type": "Application/JSON; charset=utf-8"}, {}):
        response = await http.post("/v1/classify", content=body, headers=acme.headers | media_type)
        assert response.status_code == 200, media_type


async def test_a_body_over_one_mib_is_a_413(http, core, acme):
    before = count(core, Review)
    big = {"reviews": [{"text": "好" * 2000} for _ in range(200)]}  # ~1.2 MB of UTF-8
    response = await http.post("/v1/classify", json=big, headers=acme.headers)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams in
        for _ in range(20):
            yield b" " * 65536

    headers = acme.headers | {"content-type": "application/json"}
    streamed = await http.post("/v1/classify", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "payload_too_large"
    assert count(core, Review) == before


async def test_a_broken_active_model_falls_back_to_the_previous_one(http, core, acme):
    good = registry.active(core.engine)
    broken = registry.register(core.engine, backend="local", model_ref="missing", metrics={})
    registry.promote(core.engine, saved_id(broken))
    response = await http.post(
        "/v1/classify", json={"reviews": [{"text": NEGATIVE}]}, headers=acme.headers
    )
    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert result["fallback"] is True
    assert result["model"] == {"version_id": good.id, "backend": "local"}
    assert registry.get(core.engine, saved_id(good)).status == ModelStatus.RETIRED


async def test_when_no_model_answers_it_is_a_503_and_nothing_is_stored(http, core, acme):
    core.settings.serving.fallbacks = []
    broken = registry.register(core.engine, backend="local", model_ref="missing", metrics={})
    registry.promote(core.engine, saved_id(broken))
    before = (count(core, Review), count(core, Prediction))
    response = await http.post(
        "/v1/classify", json={"reviews": [{"text": "好吃"}]}, headers=acme.headers
    )
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "backend_unavailable"
    assert "missing" in error["message"]
    assert (count(core, Review), count(core, Prediction)) == before


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer wmk_not-a-key", "Basic dXNlcjpwYXNz", "wmk_no-scheme"],
)
async def test_no_valid_key_is_a_401(http, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = await http.post("/v1/classify", json={"reviews": [{"text": "好"}]}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_a_revoked_key_is_a_401(http, core, acme):
    assert (await http.get("/v1/stats", headers=acme.headers)).status_code == 200
    core.clients.revoke("acme")
    response = await http.get("/v1/stats", headers=acme.headers)
    assert response.status_code == 401


async def test_each_key_has_its_own_rate_limit_with_retry_after(core: Core):
    core.settings.api.rate_limit = "3/minute"
    limited, other = issue(core, "limited"), issue(core, "other")
    async with client_for(create_app(core)) as http:
        statuses = [
            (await http.get("/v1/stats", headers=limited.headers)).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        refused = await http.get("/v1/stats", headers=limited.headers)
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert (await http.get("/v1/stats", headers=other.headers)).status_code == 200


async def test_the_text_limit_is_the_settings_one_in_the_check_and_in_the_openapi(core, acme):
    core.settings.serving.max_text_chars = 300
    async with client_for(create_app(core)) as http:
        schema = (await http.get("/openapi.json")).json()["components"]["schemas"]
        assert schema["ReviewIn"]["properties"]["text"]["maxLength"] == 300
        body = {"reviews": [{"text": "好" * 301}]}
        refused = await http.post("/v1/classify", json=body, headers=acme.headers)
        body = {"reviews": [{"text": "好" * 300}]}
        taken = await http.post("/v1/classify", json=body, headers=acme.headers)
    assert refused.status_code == 422
    assert "has 301 characters; at most 300" in refused.json()["error"]["message"]
    assert taken.status_code == 200
