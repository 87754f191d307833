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
    ],
)
async def test_bad_parameters_are_a_422_naming_them(http, acme, params, field):
    response = await http.get("/v1/reviews", params=params, headers=acme.headers)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith(f"{field}:")
