from typing import Any

from fastapi import FastAPI

from api.main import create_app
from core.access.clients import Caller
from core.store.tables import ClientRole
from core.wiring import Core
from tests.api.conftest import client_for
from tests.conftest import make_settings

PUBLIC = {
    ("post", "/v1/classify"),
    ("post", "/v1/webhooks/reviews"),
    ("post", "/v1/webhooks/labels"),
    ("post", "/v1/reviews/{review_id}/feedback"),
    ("post", "/v1/feedback"),
    ("delete", "/v1/feedback/{label_event_id}"),
    ("get", "/v1/reviews/{review_id}"),
    ("get", "/v1/reviews"),
    ("get", "/v1/stats"),
    ("get", "/v1/models"),
    ("get", "/v1/models/{version_id}/report.png"),
    ("post", "/v1/models/{version_id}/promote"),
    ("post", "/v1/models/rollback"),
    ("post", "/v1/retrain"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
}


async def test_unknown_routes_and_methods_answer_in_the_error_shape(http):
    missing = await http.get("/v2/nothing")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not_found", "message": "Not Found"}}
    wrong = await http.put("/v1/classify")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_an_unexpected_error_is_a_500_without_a_stack_trace(app: FastAPI, caplog):
    def boom() -> None:
        raise RuntimeError("the database password is hunter2")

    app.add_api_route("/boom", boom)
    async with client_for(app) as http:
        response = await http.get("/boom")
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "an unexpected error occurred; it was logged",
        }
    }
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert "unexpected error on GET /boom" in caplog.text


async def test_the_openapi_lists_every_endpoint_with_examples_and_auth(http):
    spec = (await http.get("/openapi.json")).json()
    operations = {(m, p) for p, item in spec["paths"].items() for m in item}
    assert operations == PUBLIC
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    classify = spec["paths"]["/v1/classify"]["post"]
    assert {"200", "401", "413", "415", "422", "429", "503"} <= set(classify["responses"])
    body = classify["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ClassifyIn"}
    assert classify["security"] == [{"HTTPBearer": []}]
    results = classify["responses"]["200"]["content"]["application/json"]["schema"]
    assert results == {"$ref": "#/components/schemas/ClassifyOut"}
    schemas = spec["components"]["schemas"]
    assert schemas["ClassifyIn"]["examples"][0]["reviews"]
    assert schemas["ClassifyIn"]["properties"]["reviews"]["maxItems"] == 256
    assert schemas["ReviewIn"]["properties"]["text"]["maxLength"] == 2000
    assert schemas["ClassifyOut"]["examples"]
    error = classify["responses"]["422"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorOut"}


async def test_the_openapi_documents_each_labels_fate_and_the_label_batches(http):
    spec = (await http.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    fate = schemas["FateOut"]
    assert set(fate["required"]) == {"status", "code", "reason", "own_view", "trained"}
    assert fate["examples"] and "own model" in fate["description"]
    assert all(field.get("description") for field in fate["properties"].values())
    assert "awaiting_corroboration" in fate["properties"]["code"]["enum"]
    assert schemas["FateStatus"]["enum"] == ["accepted", "pending", "held_back"]
    label = schemas["LabelEventOut"]
    assert label["examples"][0]["fate"]["status"] == "pending"
    assert "revoked" in label["properties"]["fate"]["description"]
    assert schemas["LabelsIn"]["properties"]["labels"]["maxItems"] == 1000
    assert schemas["LabelsIn"]["examples"][0]["labels"]
    assert schemas["LabelsWebhookIn"]["examples"][0]["type"] == "labels.created"
    bulk = spec["paths"]["/v1/feedback"]["post"]
    assert {"201", "404", "422"} <= set(bulk["responses"])
    assert "all are stored, or none" in bulk["description"]
    hook = spec["paths"]["/v1/webhooks/labels"]["post"]
    assert "Idempotent-Replayed" in hook["responses"]["200"]["headers"]
    assert {p["name"] for p in hook["parameters"]} >= {"webhook-id", "webhook-signature"}


async def test_the_bench_echo_exists_only_when_switched_on(core: Core, http):
    assert (await http.post("/bench/echo", content=b"{}")).status_code == 404
    core.settings.api.bench_echo = True
    async with client_for(create_app(core)) as bench:
        echoed = await bench.post("/bench/echo", content=b'{"a": 1}')
        assert echoed.json() == {"a": 1}
        assert "/bench/echo" not in (await bench.get("/openapi.json")).json()["paths"]


async def test_an_unreachable_store_is_a_503_with_its_code_on_every_path(
    tmp_path, caplog, monkeypatch
):
    nowhere = Core(make_settings(tmp_path, "postgresql+psycopg://postgres@127.0.0.1:1/none"))
    app = create_app(nowhere)
    review = {"reviews": [{"text": "送餐太慢了"}]}
    key = {"Authorization": "Bearer wmk_not-yet-verified"}
    async with client_for(app) as http:
        answers = {"key lookup": await http.post("/v1/classify", json=review, headers=key)}

        async def acme(_key: str) -> Caller:
            return Caller(1, "acme", ClientRole.CLIENT, ())

        monkeypatch.setattr(nowhere.clients, "authenticate", acme)
        answers |= {
            "classify": await http.post("/v1/classify", json=review, headers=key),
            "feedback": await http.post(
                "/v1/reviews/1/feedback", json={"label": "negative"}, headers=key
            ),
            "labels": await http.post(
                "/v1/feedback",
                json={"labels": [{"review_id": 1, "label": "positive"}]},
                headers=key,
            ),
            "undo": await http.delete("/v1/feedback/1", headers=key),
            "review": await http.get("/v1/reviews/1", headers=key),
            "stats": await http.get("/v1/stats", headers=key),
            "readyz": await http.get("/readyz"),
        }
    for path, answer in answers.items():
        assert answer.status_code == 503, path
        assert answer.json()["error"]["code"] == "store_unavailable", path
        assert "127.0.0.1" not in answer.text and "Traceback" not in answer.text, path
    assert "Traceback" not in caplog.text


def error_examples(operation: dict[str, Any], status: str) -> dict[str, dict[str, str]]:
    """The errors of a documented error response's examples, by name."""
    content = operation["responses"][status]["content"]["application/json"]
    assert content["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
    return {name: example["value"]["error"] for name, example in content["examples"].items()}


async def test_the_openapi_describes_the_refusals_a_client_can_meet(http, acme):
    """What a client generated from the schema needs to know: cursors only as given, review
    texts with readable characters, and a webhook id never reused for another body."""
    spec = (await http.get("/openapi.json")).json()
    listing = spec["paths"]["/v1/reviews"]["get"]
    (cursor,) = [p for p in listing["parameters"] if p["name"] == "cursor"]
    assert {"pattern": "^[A-Za-z0-9_-]+$", "maxLength": 32, "type": "string"} in cursor["schema"][
        "anyOf"
    ]
    assert "next_cursor" in cursor["description"] and "422" in cursor["description"]
    (limit,) = [p for p in listing["parameters"] if p["name"] == "limit"]
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 200)
    (review_id,) = spec["paths"]["/v1/reviews/{review_id}"]["get"]["parameters"]
    assert review_id["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 2**31 - 1,
        "title": "Review Id",
    }
    assert error_examples(listing, "422")["cursor"] == {
        "code": "invalid_input",
        "message": "cursor: not a cursor this API gave",
    }

    text = spec["components"]["schemas"]["ReviewIn"]["properties"]["text"]["description"]
    assert "binary" in text and "readable" in text
    binary = {"reviews": [{"text": "a\u0000b"}]}
    unreadable = {"reviews": [{"text": "\u200b\u200b"}]}
    said = [
        (await http.post("/v1/classify", json=body, headers=acme.headers)).json()["error"]
        for body in (binary, unreadable)
    ]
    for path in ("/v1/classify", "/v1/webhooks/reviews"):
        examples = error_examples(spec["paths"][path]["post"], "422")
        assert [examples["binary"], examples["unreadable"]] == said, path

    for path in ("/v1/webhooks/reviews", "/v1/webhooks/labels"):
        hook = spec["paths"][path]["post"]
        conflict = error_examples(hook, "409")["idempotency_conflict"]
        assert conflict["code"] == "idempotency_conflict"
        assert "another body" in conflict["message"]
        assert "another body" in hook["responses"]["409"]["description"]
