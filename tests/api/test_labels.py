"""What became of each label (its fate), many labels at once, and labels by signed webhook."""

import asyncio
from typing import Any

from sqlmodel import Session, col, func, select

from api.main import create_app
from core.store.tables import LabelEvent, LabelKind, WebhookDelivery
from core.wiring import Core
from retrain.cycle import run_cycle
from tests.api.conftest import body_of, client_for, issue, sign

PENDING = {
    "status": "pending",
    "code": "awaiting_corroboration",
    "reason": "teaches your own model now; joins the shared model once another tenant "
    "or an admin gives the same label",
    "own_view": True,
    "trained": False,
}


async def reviews_of(http, key, *texts: str) -> list[dict[str, Any]]:
    response = await http.post(
        "/v1/classify", json={"reviews": [{"text": t} for t in texts]}, headers=key.headers
    )
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def human_labels(core: Core) -> list[LabelEvent]:
    with Session(core.engine) as session:
        return list(
            session.exec(
                select(LabelEvent)
                .where(LabelEvent.kind != LabelKind.IMPORT)
                .order_by(col(LabelEvent.id))
            ).all()
        )


def deliveries(core: Core) -> int:
    with Session(core.engine) as session:
        return session.exec(select(func.count()).select_from(WebhookDelivery)).one()


async def test_a_label_says_what_became_of_it_and_the_review_shows_each_labels_fate(
    http, acme, globex, root
):
    (mine,) = await reviews_of(http, acme, "牛肉粉里全是香菜，说了不要香菜")
    (theirs,) = await reviews_of(http, globex, "牛肉粉里全是香菜，说了不要香菜")
    url = f"/v1/reviews/{mine['review_id']}/feedback"
    first = await http.post(url, json={"label": "negative", "actor": "amy"}, headers=acme.headers)
    assert first.status_code == 201
    assert first.json()["fate"] == PENDING

    again = await http.post(url, json={"label": "negative"}, headers=acme.headers)
    detail = (await http.get(f"/v1/reviews/{mine['review_id']}", headers=acme.headers)).json()
    assert [label["fate"]["code"] for label in detail["labels"]] == [
        "superseded",
        "awaiting_corroboration",
    ], "one client is one labeller: its later label replaces the earlier one"

    agreeing = await http.post(
        f"/v1/reviews/{theirs['review_id']}/feedback",
        json={"label": "negative"},
        headers=globex.headers,
    )
    assert agreeing.json()["fate"]["status"] == "accepted"
    assert agreeing.json()["fate"]["code"] == "corroborated"
    detail = (await http.get(f"/v1/reviews/{mine['review_id']}", headers=acme.headers)).json()
    assert detail["labels"][1]["id"] == again.json()["id"]
    assert detail["labels"][1]["fate"]["code"] == "corroborated"

    revoked = await http.delete(f"/v1/feedback/{again.json()['id']}", headers=acme.headers)
    assert revoked.json()["fate"] is None
    detail = (await http.get(f"/v1/reviews/{mine['review_id']}", headers=acme.headers)).json()
    assert [label["fate"] and label["fate"]["code"] for label in detail["labels"]] == [
        "corroborated",  # the earlier label counts again, and globex agrees with it
        None,
    ]

    by_admin = await http.post(url, json={"label": "positive"}, headers=root.headers)
    assert by_admin.json()["fate"]["code"] == "admin"
    detail = (await http.get(f"/v1/reviews/{mine['review_id']}", headers=root.headers)).json()
    assert detail["labels"][0]["fate"]["code"] == "contradicts_admin"
    assert detail["labels"][0]["fate"]["status"] == "held_back"


async def test_a_label_shows_as_trained_once_a_retrain_used_it(http, core, root):
    (result,) = await reviews_of(http, root, "外卖小哥态度特别好，还帮忙带了垃圾下楼")
    url = f"/v1/reviews/{result['review_id']}/feedback"
    label = (await http.post(url, json={"label": "positive"}, headers=root.headers)).json()
    assert label["fate"]["trained"] is False
    cycle = await run_cycle(core, "local")
    assert cycle.outcome == "promoted", cycle
    detail = (await http.get(f"/v1/reviews/{result['review_id']}", headers=root.headers)).json()
    assert detail["labels"][0]["fate"]["trained"] is True


async def test_many_labels_are_stored_in_order_with_their_fates(http, core, acme):
    results = await reviews_of(http, acme, "第一份凉了", "第二份很好吃", "第三份少了一个菜")
    body = {
        "labels": [
            {"review_id": results[0]["review_id"], "label": "negative", "actor": "shop-1"},
            {"review_id": results[1]["review_id"], "label": "positive"},
            {
                "review_id": results[2]["review_id"],
                "label": "negative",
                "actor": "shop-2",
                "prediction_id": results[2]["prediction_id"],
            },
        ]
    }
    response = await http.post("/v1/feedback", json=body, headers=acme.headers)
    assert response.status_code == 201, response.text
    labels = response.json()["labels"]
    assert [label["review_id"] for label in labels] == [r["review_id"] for r in results]
    assert [label["actor"] for label in labels] == ["acme/shop-1", "acme", "acme/shop-2"]
    assert [label["label"] for label in labels] == ["negative", "positive", "negative"]
    assert labels[2]["prediction_id"] == results[2]["prediction_id"]
    assert all(label["fate"] == PENDING for label in labels)
    assert [e.id for e in human_labels(core)] == [label["id"] for label in labels]


async def test_many_labels_are_all_or_nothing_and_a_client_labels_only_its_own(
    http, core, acme, globex, root
):
    (mine,) = await reviews_of(http, acme, "我的评论")
    (theirs,) = await reviews_of(http, globex, "别人的评论")
    body = {
        "labels": [
            {"review_id": mine["review_id"], "label": "positive"},
            {"review_id": theirs["review_id"], "label": "positive"},
        ]
    }
    refused = await http.post("/v1/feedback", json=body, headers=acme.headers)
    assert refused.status_code == 404
    assert refused.json()["error"]["message"] == (
        f"labels[1]: review {theirs['review_id']} does not exist"
    )
    assert human_labels(core) == []

    wrong_prediction = {"labels": [body["labels"][0], {**body["labels"][0], "prediction_id": 1}]}
    wrong_prediction["labels"][1]["prediction_id"] = 999_999
    refused = await http.post("/v1/feedback", json=wrong_prediction, headers=acme.headers)
    assert refused.status_code == 404
    assert refused.json()["error"]["message"].startswith("labels[1]: prediction 999999")
    assert human_labels(core) == []

    by_admin = await http.post("/v1/feedback", json=body, headers=root.headers)
    assert by_admin.status_code == 201
    assert [label["fate"]["code"] for label in by_admin.json()["labels"]] == ["admin", "admin"]


async def test_a_batch_of_labels_must_hold_1_to_1000_well_formed_ones(http, acme):
    (result,) = await reviews_of(http, acme, "还行吧")
    one = {"review_id": result["review_id"], "label": "positive"}
    for body, message in [
        ({"labels": []}, "labels: List should have at least 1 item"),
        ({"labels": [one] * 1001}, "labels: List should have at most 1000 items"),
        ({"labels": [one, {**one, "label": "maybe"}]}, "labels[1].label:"),
        ({"labels": [one, {"label": "positive"}]}, "labels[1].review_id: Field required"),
        ({"labels": [{**one, "review_id": 0}]}, "labels[0].review_id:"),
        ({"labels": [{**one, "extra": 1}]}, "labels[0].extra:"),
    ]:
        response = await http.post("/v1/feedback", json=body, headers=acme.headers)
        assert response.status_code == 422, body
        assert response.json()["error"]["message"].startswith(message), response.text
    many = await http.post("/v1/feedback", json={"labels": [one] * 1000}, headers=acme.headers)
    assert many.status_code == 201
    assert len(many.json()["labels"]) == 1000


async def post_labels(http, key, payload: Any, *, webhook_id: str | None = None, secret=None):
    body = body_of(payload)
    headers = sign(secret or key.webhook_secret, body, webhook_id=webhook_id)
    return await http.post("/v1/webhooks/labels", content=body, headers=key.headers | headers)


async def test_labels_by_signed_webhook_are_stored_once_per_delivery(http, core, acme):
    results = await reviews_of(http, acme, "汤洒了一半", "分量很足")
    event = {
        "type": "labels.created",
        "labels": [
            {"review_id": results[0]["review_id"], "label": "negative", "actor": "shop-1"},
            {"review_id": results[1]["review_id"], "label": "positive"},
        ],
    }
    first = await post_labels(http, acme, event, webhook_id="msg_labels_1")
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["webhook_id"] == "msg_labels_1"
    assert [label["actor"] for label in answer["labels"]] == ["acme/shop-1", "acme"]
    assert all(label["fate"] == PENDING for label in answer["labels"])
    assert "idempotent-replayed" not in first.headers
    assert {e.channel for e in human_labels(core)} == {"webhook"}

    retried = await post_labels(http, acme, event, webhook_id="msg_labels_1")
    assert retried.status_code == 200
    assert retried.headers["idempotent-replayed"] == "true"
    assert retried.json() == answer
    assert (len(human_labels(core)), deliveries(core)) == (2, 1)


async def test_concurrent_duplicate_label_deliveries_are_stored_once(http, core, acme):
    results = await reviews_of(http, acme, *(f"第{i}单不错" for i in range(3)))
    event = {"labels": [{"review_id": r["review_id"], "label": "positive"} for r in results]}
    responses = await asyncio.gather(
        *(post_labels(http, acme, event, webhook_id="dup-labels") for _ in range(8))
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    assert (len(human_labels(core)), deliveries(core)) == (3, 1)


async def test_a_label_delivery_is_signed_all_or_nothing_and_only_for_your_reviews(
    http, core, acme, globex
):
    (mine,) = await reviews_of(http, acme, "送得挺快")
    (theirs,) = await reviews_of(http, globex, "送得挺慢")
    event = {"labels": [{"review_id": mine["review_id"], "label": "positive"}]}
    forged = await post_labels(http, acme, event, secret=globex.webhook_secret)
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "unauthenticated"

    event["labels"].append({"review_id": theirs["review_id"], "label": "positive"})
    foreign = await post_labels(http, acme, event, webhook_id="msg_foreign")
    assert foreign.status_code == 404
    assert foreign.json()["error"]["message"].startswith("labels[1]: review")
    assert (human_labels(core), deliveries(core)) == ([], 0)
    # Nothing was stored, so the same delivery may be sent again once it is right.
    event["labels"].pop()
    fixed = await post_labels(http, acme, event, webhook_id="msg_foreign")
    assert fixed.status_code == 200
    assert "idempotent-replayed" not in fixed.headers

    wrong_type = await post_labels(http, acme, {**event, "type": "reviews.created"})
    assert wrong_type.status_code == 422
    assert wrong_type.json()["error"]["message"].startswith("type:")


async def test_labels_from_every_route_are_counted_once_in_the_metrics(http, acme):
    results = await reviews_of(http, acme, "好吃", "太慢", "一般", "很香")
    ids = [r["review_id"] for r in results]
    predicted = [r["label"] for r in results]
    flipped = ["negative" if label == "positive" else "positive" for label in predicted]
    await http.post(
        f"/v1/reviews/{ids[0]}/feedback", json={"label": flipped[0]}, headers=acme.headers
    )
    await http.post(
        "/v1/feedback",
        json={"labels": [{"review_id": ids[1], "label": flipped[1]}]},
        headers=acme.headers,
    )
    event = {
        "labels": [
            {"review_id": ids[2], "label": flipped[2]},
            {"review_id": ids[3], "label": predicted[3]},
        ]
    }
    await post_labels(http, acme, event, webhook_id="msg_counted")
    await post_labels(http, acme, event, webhook_id="msg_counted")  # a replay counts nothing

    text = (await http.get("/metrics")).text
    assert 'waimai_label_events_total{channel="api",kind="correction"} 2.0' in text
    assert 'waimai_label_events_total{channel="webhook",kind="correction"} 1.0' in text
    assert 'waimai_label_events_total{channel="webhook",kind="confirmation"} 1.0' in text


async def test_label_batches_and_deliveries_on_each_store(store_core: Core):
    """The same on a fresh SQLite or PostgreSQL store (no dataset: nothing corroborates)."""
    acme = issue(store_core, "acme")
    async with client_for(create_app(store_core)) as http:
        results = await reviews_of(http, acme, "面有点坨", "饺子皮薄馅大")
        labels = [{"review_id": r["review_id"], "label": "positive"} for r in results]
        bulk = await http.post("/v1/feedback", json={"labels": labels}, headers=acme.headers)
        assert bulk.status_code == 201, bulk.text
        assert [label["fate"]["code"] for label in bulk.json()["labels"]] == [
            "awaiting_corroboration"
        ] * 2
        first = await post_labels(http, acme, {"labels": labels[:1]}, webhook_id="pg-1")
        again = await post_labels(http, acme, {"labels": labels[:1]}, webhook_id="pg-1")
        assert (first.status_code, again.headers.get("idempotent-replayed")) == (200, "true")
        assert again.json() == first.json()
    assert (len(human_labels(store_core)), deliveries(store_core)) == (3, 1)
