from fastapi import FastAPI

from api.main import create_app
from core.clients import Caller
from core.tables import ClientRole
from core.wiring import Core
from tests.api.conftest import client_for
from tests.conftest import make_settings

PUBLIC = {
    ("post", "/v1/classify"),
    ("post", "/v1/webhooks/reviews"),
    ("post", "/v1/reviews/{review_id}/feedback"),
    ("delete", "/v1/feedback/{label_event_id}"),
    ("get", "/v1/reviews/{review_id}"),
    ("get", "/v1/reviews"),
    ("get", "/v1/stats"),
    ("get", "/v1/models"),
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
    assert body == {"$ref": "#/components/schemas/ClassifyRequest"}
    assert classify["security"] == [{"HTTPBearer": []}]
    results = classify["responses"]["200"]["content"]["application/json"]["schema"]
    assert results == {"$ref": "#/components/schemas/ClassifyResponse"}
    schemas = spec["components"]["schemas"]
    assert schemas["ClassifyRequest"]["examples"][0]["reviews"]
    assert schemas["ClassifyRequest"]["properties"]["reviews"]["maxItems"] == 256
    assert schemas["ReviewIn"]["properties"]["text"]["maxLength"] == 2000
    assert schemas["ClassifyResponse"]["examples"]
    error = classify["responses"]["422"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorResponse"}


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
