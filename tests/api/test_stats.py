from datetime import UTC, datetime, timedelta


async def test_stats_count_reviews_labels_and_versions_of_the_caller_only(http, acme, globex, root):
    body = {
        "reviews": [
            {"text": "太难吃了", "merchant_id": "shop-1"},
            {"text": "好吃，还会再来", "merchant_id": "shop-1"},
            {"text": "很快，好吃，味道足", "merchant_id": "shop-2"},
        ]
    }
    results = (await http.post("/v1/classify", json=body, headers=acme.headers)).json()["results"]
    await http.post("/v1/classify", json={"reviews": [{"text": "别人的"}]}, headers=globex.headers)
    first = results[0]
    flipped = "positive" if first["label"] == "negative" else "negative"
    await http.post(
        f"/v1/reviews/{first['review_id']}/feedback", json={"label": flipped}, headers=acme.headers
    )

    stats = (await http.get("/v1/stats", headers=acme.headers)).json()
    positive = sum(r["label"] == "positive" for r in results[1:]) + (flipped == "positive")
    assert stats["reviews"] == 3
    assert stats["positive"] == positive
    assert stats["positive_rate"] == positive / 3
    assert (stats["labelled"], stats["corrections"]) == (1, 1)
    assert stats["correction_rate"] == 1 / 3
    (version,) = stats["by_model_version"]
    assert version["model_version_id"] == first["model"]["version_id"]
    assert (version["predictions"], version["corrections"], version["fallbacks"]) == (3, 1, 0)

    shop = (
        await http.get("/v1/stats", params={"merchant_id": "shop-2"}, headers=acme.headers)
    ).json()
    assert shop["reviews"] == 1
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    empty = (await http.get("/v1/stats", params={"since": later}, headers=acme.headers)).json()
    assert (empty["reviews"], empty["positive_rate"], empty["by_model_version"]) == (0, None, [])
    everyone = (await http.get("/v1/stats", headers=root.headers)).json()
    assert everyone["reviews"] == 4
