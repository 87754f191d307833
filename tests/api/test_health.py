from sqlmodel import Session, update

from api.main import create_app
from core.models import registry
from core.store.tables import ModelStatus, ModelVersion, saved_id
from core.wiring import Core
from tests.api.conftest import client_for
from tests.conftest import make_settings


async def test_alive_and_ready_with_the_active_model(http, core):
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    active = registry.active(core.engine)
    assert ready.json() == {
        "status": "ready",
        "model": {"version_id": active.id, "backend": "local"},
        "fallback": False,
    }


async def test_not_ready_without_an_active_model(http, core):
    with Session(core.engine) as session:
        session.exec(update(ModelVersion).values(status=ModelStatus.RETIRED))
        session.commit()
    response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_active_model"
    assert (await http.get("/healthz")).status_code == 200


async def test_ready_on_a_fallback_when_the_active_model_cannot_load(http, core):
    good = registry.active(core.engine)
    broken = registry.register(core.engine, backend="local", model_ref="missing", metrics={})
    registry.promote(core.engine, saved_id(broken))
    response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json()["model"]["version_id"] == good.id
    assert response.json()["fallback"] is True
    core.settings.serving.fallbacks = []
    assert (await http.get("/readyz")).status_code == 503


async def test_not_ready_when_the_store_cannot_be_reached(tmp_path):
    nowhere = Core(make_settings(tmp_path, "postgresql+psycopg://postgres@127.0.0.1:1/none"))
    async with client_for(create_app(nowhere)) as http:
        response = await http.get("/readyz")
        assert (await http.get("/healthz")).status_code == 200
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "store_unavailable"


async def test_metrics_count_requests_predictions_fallbacks_and_labels(http, core, acme):
    result = (
        await http.post("/v1/classify", json={"reviews": [{"text": "好吃"}]}, headers=acme.headers)
    ).json()["results"][0]
    await http.post(
        f"/v1/reviews/{result['review_id']}/feedback",
        json={"label": "negative"},
        headers=acme.headers,
    )
    broken = registry.register(core.engine, backend="local", model_ref="missing", metrics={})
    registry.promote(core.engine, saved_id(broken))
    await http.post("/v1/classify", json={"reviews": [{"text": "太慢"}]}, headers=acme.headers)
    await http.get("/v1/reviews/12345678", headers=acme.headers)

    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'waimai_http_requests_total{method="POST",route="/v1/classify",status="200"} 2.0' in text
    assert 'route="/v1/reviews/{review_id}",status="404"' in text
    assert "waimai_http_request_duration_seconds_bucket" in text
    assert 'waimai_predictions_total{backend="local",channel="api",label="positive"}' in text
    assert 'waimai_fallbacks_total{backend="local"} 1.0' in text
    assert 'waimai_backend_errors_total{backend="local"} 1.0' in text
    assert 'waimai_label_events_total{channel="api",kind="correction"} 1.0' in text
    assert acme.key not in text
