import shutil

from core.models import registry
from core.store.tables import ModelStatus, ModelVersion, saved_id
from core.wiring import Core
from retrain.trainers.local import fit
from serving.base import Label


async def test_admins_list_promote_and_roll_back_versions(http, core, root):
    first = registry.active(core.engine)
    candidate = registry.register(
        core.engine, backend="local", model_ref=first.model_ref, metrics={"accuracy": 0.9}
    )
    listed = (await http.get("/v1/models", headers=root.headers)).json()["models"]
    assert [m["id"] for m in listed][:2] == [candidate.id, first.id]
    assert listed[0]["status"] == "candidate" and listed[0]["metrics"] == {"accuracy": 0.9}

    promoted = await http.post(f"/v1/models/{candidate.id}/promote", headers=root.headers)
    assert promoted.status_code == 200
    assert promoted.json()["status"] == "active"
    assert "root" in promoted.json()["note"]
    assert registry.active(core.engine).id == candidate.id

    again = await http.post(f"/v1/models/{candidate.id}/promote", headers=root.headers)
    assert again.status_code == 409

    rolled = await http.post("/v1/models/rollback", headers=root.headers)
    assert rolled.status_code == 200
    assert rolled.json()["id"] == first.id
    assert registry.get(core.engine, saved_id(candidate)).status == "retired"


async def test_unknown_versions_and_nothing_to_roll_back_to(http, core, root):
    assert (await http.post("/v1/models/999999/promote", headers=root.headers)).status_code == 404
    response = await http.post("/v1/models/rollback", headers=root.headers)
    assert response.status_code == 409
    assert "no earlier active version" in response.json()["error"]["message"]


async def test_client_keys_may_not_touch_models(http, core, acme):
    active = registry.active(core.engine)
    for method, url in [
        ("GET", "/v1/models"),
        ("POST", f"/v1/models/{active.id}/promote"),
        ("POST", "/v1/models/rollback"),
    ]:
        response = await http.request(method, url, headers=acme.headers)
        assert response.status_code == 403
        assert response.json()["error"] == {
            "code": "forbidden",
            "message": "this endpoint is for admin keys only",
        }


async def test_admins_ask_for_a_retrain_and_a_pending_one_absorbs_the_next(http, root, acme):
    first = await http.post(
        "/v1/retrain", json={"reason": "many corrections", "backend": "local"}, headers=root.headers
    )
    assert first.status_code == 202
    ticket = first.json()
    assert (ticket["new"], ticket["requested_by"], ticket["backend"]) == (True, "root", "local")
    again = (await http.post("/v1/retrain", json={}, headers=root.headers)).json()
    assert (again["id"], again["new"]) == (ticket["id"], False)
    assert (await http.post("/v1/retrain", json={}, headers=acme.headers)).status_code == 403
    bad = await http.post("/v1/retrain", json={"backend": "gpt"}, headers=root.headers)
    assert bad.status_code == 422
    assert bad.json()["error"]["message"].startswith("backend:")


async def worse_model(core: Core) -> ModelVersion:
    """A CPU model trained on 300 reviews with their labels flipped: far below the active one."""
    texts, labels = await core.dataset.holdout()
    flipped = [Label(1 - label) for label in labels[:300]]
    model = fit(texts[:300], flipped, core.settings.local.ngram_max)
    model.save(core.settings.local.dir / "flipped", {"examples": 300})
    return registry.register(core.engine, backend="local", model_ref="flipped", metrics={})


async def test_a_version_the_gate_keeps_out_is_refused_with_its_reason(http, core, root):
    active = registry.active(core.engine)
    worse = await worse_model(core)
    response = await http.post(f"/v1/models/{worse.id}/promote", headers=root.headers)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "gate_refused"
    assert "below the active model's" in error["message"]
    assert registry.active(core.engine).id == active.id
    rejected = registry.get(core.engine, saved_id(worse))
    assert rejected.status == ModelStatus.REJECTED
    assert rejected.metrics["gate"]["promote"] is False
    assert rejected.metrics["gate"]["active_version_id"] == active.id

    # Asked again while the same version is active: refused at once, without judging it again
    # (its model is gone, so judging it, or even asking it the canaries, would fail).
    shutil.rmtree(core.settings.local.dir / worse.model_ref)
    again = await http.post(f"/v1/models/{worse.id}/promote", headers=root.headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "gate_refused"
    assert f"judged against version {active.id}" in again.json()["error"]["message"]


async def test_forcing_past_the_gate_is_an_explicit_choice_and_is_recorded(http, core, root):
    worse = await worse_model(core)
    forced = await http.post(
        f"/v1/models/{worse.id}/promote", json={"force": True}, headers=root.headers
    )
    assert forced.status_code == 200
    body = forced.json()
    assert body["status"] == "active"
    assert "forced past the gate" in body["note"]
    assert body["metrics"]["forced"]["by"] == "root (API)"
    assert registry.active(core.engine).id == worse.id


async def test_admins_get_a_versions_report_as_a_picture(http, core, root, acme):
    active = registry.active(core.engine)
    response = await http.get(f"/v1/models/{active.id}/report.png", headers=root.headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")
    assert (await http.get("/v1/models/999999/report.png", headers=root.headers)).status_code == 404
    refused = await http.get(f"/v1/models/{active.id}/report.png", headers=acme.headers)
    assert refused.status_code == 403
