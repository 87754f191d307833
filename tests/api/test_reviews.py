from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api.conftest import Key

TEXTS = [
    "太难吃了，送得又慢",
    "好吃，还会再来",
    "一般般吧",
    "很快，好吃，味道足，量大",
    "凉了，难吃",
]


@pytest.fixture
async def stored(http, acme, globex) -> list[dict[str, Any]]:
    body = {
        "reviews": [
            {"text": text, "merchant_id": "shop-1" if i % 2 else "shop-2"}
            for i, text in enumerate(TEXTS)
        ]
    }
    response = await http.post("/v1/classify", json=body, headers=acme.headers)
    results: list[dict[str, Any]] = response.json()["results"]
    await http.post("/v1/classify", json={"reviews": [{"text": "别人的"}]}, headers=globex.headers)
    return results


async def test_one_review_with_its_prediction(http, acme, globex, stored):
    first = stored[0]
    response = await http.get(f"/v1/reviews/{first['review_id']}", headers=acme.headers)
    assert response.status_code == 200
    review = response.json()
    assert review["text"] == TEXTS[0]
    assert review["merchant_id"] == "shop-2"
    assert review["prediction"]["id"] == first["prediction_id"]
    assert review["label"] == first["label"] == review["prediction"]["label"]
    assert review["labels"] == []
    assert datetime.fromisoformat(review["created_at"]).tzinfo is not None
    assert (
        await http.get(f"/v1/reviews/{first['review_id']}", headers=globex.headers)
    ).status_code == 404
    assert (await http.get("/v1/reviews/0", headers=acme.headers)).status_code == 422


async def test_pages_follow_the_cursor_to_the_end(http, acme, stored):
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await http.get("/v1/reviews", params=params, headers=acme.headers)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r["review_id"] for r in reversed(stored)]


async def test_pages_are_filtered(http, acme, root, stored):
    async def ids(key: Key = acme, **params: Any) -> set[int]:
        page = (await http.get("/v1/reviews", params=params, headers=key.headers)).json()
        return {item["id"] for item in page["items"]}

    assert await ids(merchant_id="shop-1") == {stored[1]["review_id"], stored[3]["review_id"]}
    negative = {r["review_id"] for r in stored if r["label"] == "negative"}
    assert await ids(label="negative") == negative
    assert await ids(corrected=True) == set()
    first = stored[0]
    flipped = "positive" if first["label"] == "negative" else "negative"
    url = f"/v1/reviews/{first['review_id']}/feedback"
    await http.post(url, json={"label": flipped}, headers=acme.headers)
    assert await ids(corrected=True) == {first["review_id"]}
    assert first["review_id"] not in await ids(corrected=False)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await ids(since=future) == set()
    assert await ids(since="2000-01-01T00:00:00") >= {r["review_id"] for r in stored}
    assert len(await ids(key=root, limit=200)) == len(stored) + 1  # an admin sees every tenant


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"label": "meh"}, "label"),
        ({"since": "yesterday"}, "since"),
        ({"since": "0.5"}, "since"),  # not a Unix time: the schema says date-time
        ({"since": "1700000000"}, "since"),
        ({"since": "2026-01-01"}, "since"),  # a date, not a date-time
        ({"limit": "5 "}, "limit"),
        ({"limit": "5.0"}, "limit"),
        ({"cursor": "YmVmb3JlOjM="}, "cursor"),  # padded: not as the API gives it
    ],
)
async def test_bad_parameters_are_a_422_naming_them(http, acme, params, field):
    response = await http.get("/v1/reviews", params=params, headers=acme.headers)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith(f"{field}:")


@pytest.mark.parametrize(
    "written", ["{id}%20", "%20{id}", "+{id}", "{id}.0", "0{id}", "{head}_{tail}", "-{id}", "0"]
)
async def test_an_id_in_the_path_is_a_plain_decimal_number(http, acme, stored, written):
    review_id = str(stored[0]["review_id"])
    raw = written.format(id=review_id, head=review_id[:1], tail=review_id[1:])
    for method, url in [
        ("GET", f"/v1/reviews/{raw}"),
        ("POST", f"/v1/reviews/{raw}/feedback"),
        ("DELETE", f"/v1/feedback/{raw}"),
    ]:
        response = await http.request(
            method,
            url,
            json={"label": "positive"} if method == "POST" else None,
            headers=acme.headers,
        )
        assert response.status_code == 422, (url, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_input"
        assert error["message"].split(":")[0] in {"review_id", "label_event_id"}, error


@pytest.mark.parametrize(
    "since",
    [
        "2000-01-01T00:00:00",
        "2000-01-01T00:00:00Z",
        "2000-01-01T08:00:00+08:00",
        "2000-01-01T00:00:00.123456-05:00",
        "2000-01-01 00:00:00",
        "2000-01-01T00:00",
    ],
)
async def test_since_takes_iso_date_times_with_or_without_a_zone(http, acme, stored, since):
    for path in ("/v1/reviews", "/v1/stats"):
        response = await http.get(path, params={"since": since}, headers=acme.headers)
        assert response.status_code == 200, (path, response.text)


@pytest.mark.parametrize("since", ["0.5", "1700000000", "2026-01-01", " 2026-01-01T00:00:00"])
async def test_stats_refuse_a_since_that_is_not_a_date_time(http, acme, since):
    response = await http.get("/v1/stats", params={"since": since}, headers=acme.headers)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("since:")
