from core.models import registry
from core.store.tables import saved_id


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
