from typing import Any

from core.classify import reviews
from core.store.tables import LabelKind


async def classified(http, key, text="送餐太慢了，菜都凉了") -> dict[str, Any]:
    response = await http.post(
        "/v1/classify", json={"reviews": [{"text": text}]}, headers=key.headers
    )
    result: dict[str, Any] = response.json()["results"][0]
    return result


async def test_a_correction_and_a_confirmation_are_appended_and_the_latest_counts(http, core, acme):
    result = await classified(http, acme)
    url = f"/v1/reviews/{result['review_id']}/feedback"
    corrected = await http.post(
        url, json={"label": "positive", "actor": "amy"}, headers=acme.headers
    )
    assert corrected.status_code == 201
    event = corrected.json()
    assert event["kind"] == LabelKind.CORRECTION
    assert (event["label"], event["label_zh"]) == ("positive", "好评")
    assert event["actor"] == "acme/amy"
    assert event["prediction_id"] == result["prediction_id"]
    assert event["revoked_at"] is None

    confirmed = await http.post(
        url, json={"label": "negative", "actor": "amy"}, headers=acme.headers
    )
    assert confirmed.json()["kind"] == LabelKind.CONFIRMATION
    history = reviews.history(core.engine, result["review_id"])
    assert [e.label for e in history] == [1, 0]  # appended, nothing replaced
    detail = (await http.get(f"/v1/reviews/{result['review_id']}", headers=acme.headers)).json()
    assert detail["label"] == "negative"
    assert not detail["corrected"]
    assert [label["kind"] for label in detail["labels"]] == ["correction", "confirmation"]


async def test_a_label_can_be_revoked_once(http, core, acme):
    result = await classified(http, acme)
    url = f"/v1/reviews/{result['review_id']}/feedback"
    event = (await http.post(url, json={"label": "positive"}, headers=acme.headers)).json()
    assert event["actor"] == "acme"
    revoked = await http.delete(f"/v1/feedback/{event['id']}", headers=acme.headers)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    detail = (await http.get(f"/v1/reviews/{result['review_id']}", headers=acme.headers)).json()
    assert detail["label"] == result["label"]  # back to the model's verdict
    again = await http.delete(f"/v1/feedback/{event['id']}", headers=acme.headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"


async def test_clients_cannot_label_or_revoke_what_is_not_theirs(http, acme, globex, root):
    result = await classified(http, acme)
    url = f"/v1/reviews/{result['review_id']}/feedback"
    refused = await http.post(url, json={"label": "positive"}, headers=globex.headers)
    assert refused.status_code == 404
    event = (await http.post(url, json={"label": "positive"}, headers=acme.headers)).json()
    assert (
        await http.delete(f"/v1/feedback/{event['id']}", headers=globex.headers)
    ).status_code == 404
    by_admin = await http.post(url, json={"label": "negative"}, headers=root.headers)
    assert by_admin.status_code == 201
    assert by_admin.json()["actor"] == "root"


async def test_unknown_reviews_labels_and_bad_labels_are_refused(http, acme):
    missing = await http.post(
        "/v1/reviews/999999/feedback", json={"label": "positive"}, headers=acme.headers
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert (await http.delete("/v1/feedback/999999", headers=acme.headers)).status_code == 404
    result = await classified(http, acme)
    url = f"/v1/reviews/{result['review_id']}/feedback"
    bad = await http.post(url, json={"label": "maybe"}, headers=acme.headers)
    assert bad.status_code == 422
    assert bad.json()["error"]["message"].startswith("label:")
    wrong = await http.post(
        url, json={"label": "positive", "prediction_id": 999999}, headers=acme.headers
    )
    assert wrong.status_code == 404
