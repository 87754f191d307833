"""Who gets into the operator page: admin keys (Bearer or a login), nobody else; the session
cookie's flags, its end, and the form token."""

import html
import time
from datetime import timedelta

import httpx
from pydantic import SecretStr

from api.main import create_app
from core.models import registry
from core.store.tables import ClientRole, ModelStatus, saved_id
from tests.api.admin.conftest import csrf_of, log_in, page_client, post_form, same_model
from tests.api.conftest import issue


async def test_without_a_key_a_browser_is_sent_to_log_in_and_anything_else_is_refused(
    browser_like, core
):
    active = registry.active(core.engine)
    sent = await browser_like.get("/admin/")
    assert sent.status_code == 303 and sent.headers["location"] == "/admin/login"
    form = await browser_like.get("/admin/login")
    assert form.status_code == 200 and "log in with an admin key" in form.text
    for method, path in [
        ("GET", f"/admin/models/{active.id}/report.png"),
        ("POST", f"/admin/models/{active.id}/promote"),
        ("POST", "/admin/models/rollback"),
    ]:
        refused = await browser_like.request(method, path, headers={"Accept": "*/*"})
        assert refused.status_code == 401, (method, path)
        assert "log in with an admin key" in refused.text
    assert registry.active(core.engine).id == active.id


async def test_client_keys_are_refused_as_a_header_and_at_the_login(browser_like, acme):
    refused = await browser_like.get("/admin/", headers=acme.headers)
    assert refused.status_code == 403
    assert "admin keys only" in refused.text
    login = await log_in(browser_like, acme.key)
    assert login.status_code == 403
    said = html.unescape(login.text)
    assert "'acme' holds a client key; the operator page is for admin keys only" in said
    assert (await browser_like.get("/admin/")).status_code == 303


async def test_an_unknown_key_or_none_is_refused_at_the_login(browser_like):
    unknown = await log_in(browser_like, "wmk_nope")
    assert unknown.status_code == 401
    assert "the API key is not valid (unknown or revoked)" in unknown.text
    empty = await log_in(browser_like, "  ")
    assert empty.status_code == 401 and "enter an admin API key" in empty.text


async def test_an_admin_key_works_as_a_bearer_header(browser_like, root, core):
    page = await browser_like.get("/admin/", headers=root.headers)
    assert page.status_code == 200
    assert f'id="version-{registry.active(core.engine).id}"' in page.text
    metrics = (await browser_like.get("/metrics")).text
    assert 'waimai_http_requests_total{method="GET",route="/admin/",status="200"} 1.0' in metrics


async def test_a_login_is_a_signed_secure_cookie_for_the_page_only(browser_like, app, root, core):
    login = await log_in(browser_like, root.key)
    assert login.status_code == 303 and login.headers["location"] == "/admin/"
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("waimai_admin=")
    for flag in ("path=/admin", "httponly", "samesite=strict", "secure", "Max-Age=28800"):
        assert flag in cookie, flag
    assert root.key not in cookie
    page = await browser_like.get("/admin/")
    assert page.status_code == 200 and "root" in page.text
    active = registry.active(core.engine)
    picture = await browser_like.get(f"/admin/models/{active.id}/report.png")
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")

    tampered = cookie.split(";")[0][:-3] + "abc"
    async with page_client(app) as stranger:
        forged = await stranger.get("/admin/", headers={"Cookie": tampered})
    assert forged.status_code == 303, "a cookie whose signature fails is no login"


async def test_logging_out_ends_the_login(browser_like, root):
    await log_in(browser_like, root.key)
    page = await browser_like.get("/admin/")
    out = await browser_like.post("/admin/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/admin/login"
    assert "root logged out" in (await browser_like.get("/admin/login")).text
    assert (await browser_like.get("/admin/")).status_code == 303


async def test_revoking_or_replacing_the_key_ends_the_login_at_once(browser_like, core):
    for ends in ("revoke", "rotate"):
        admin = issue(core, f"ops-{ends}", ClientRole.ADMIN)
        await log_in(browser_like, admin.key)
        assert (await browser_like.get("/admin/")).status_code == 200
        if ends == "revoke":
            core.clients.revoke(admin.name)
        else:
            core.clients.rotate_key(admin.name, timedelta(0))
        sent = await browser_like.get("/admin/")
        assert sent.status_code == 303
        form = await browser_like.get(sent.headers["location"])
        assert ("was revoked" if ends == "revoke" else "was replaced") in html.unescape(form.text)


async def test_a_login_lasts_api_session_hours_however_often_it_is_used(
    browser_like, root, core, monkeypatch
):
    started = time.time()
    hours = core.settings.api.session_hours
    await log_in(browser_like, root.key)
    monkeypatch.setattr(time, "time", lambda: started + (hours - 1) * 3600)
    await post_form(browser_like, "/admin/models/rollback")  # the cookie is signed anew
    monkeypatch.setattr(time, "time", lambda: started + hours * 3600 + 1)
    sent = await browser_like.get("/admin/")
    assert sent.status_code == 303
    assert "your login has expired" in (await browser_like.get("/admin/login")).text


async def test_forms_without_the_logins_token_change_nothing(browser_like, root, core):
    candidate = same_model(core)
    await log_in(browser_like, root.key)
    for token in ({}, {"csrf": "forged"}):
        refused = await browser_like.post(f"/admin/models/{candidate.id}/promote", data=token)
        assert refused.status_code == 403
        assert "security token does not match your login" in refused.text
    assert registry.get(core.engine, saved_id(candidate)).status == ModelStatus.CANDIDATE
    stale = await browser_like.post("/admin/login", data={"key": root.key, "csrf": "old"})
    assert stale.status_code == 403 and "the login form had expired" in stale.text


async def test_a_login_holds_across_replicas_that_share_the_session_secret(core, root):
    core.settings.api.session_secret = None
    one, two = create_app(core), create_app(core)
    async with page_client(one) as first:
        await log_in(first, root.key)
        cookie = {"waimai_admin": first.cookies["waimai_admin"]}
    async with page_client(two) as second:
        second.cookies.update(cookie)
        assert (await second.get("/admin/")).status_code == 303
    core.settings.api.session_secret = SecretStr("a-secret-shared-by-every-replica-0123456789")
    one, two = create_app(core), create_app(core)
    async with page_client(one) as first:
        await log_in(first, root.key)
        cookie = {"waimai_admin": first.cookies["waimai_admin"]}
    async with page_client(two) as second:
        second.cookies.update(cookie)
        assert (await second.get("/admin/")).status_code == 200


async def test_pages_say_what_they_are_and_refuse_framing(browser_like, root, http):
    await log_in(browser_like, root.key)
    page = await browser_like.get("/admin/")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert (await browser_like.get("/admin/static/admin.css")).status_code == 200
    api = await http.get("/healthz")
    assert "set-cookie" not in api.headers and "content-security-policy" not in api.headers
    spec = (await http.get("/openapi.json")).json()
    assert not [path for path in spec["paths"] if path.startswith("/admin")]


async def test_the_login_form_warns_when_its_cookie_cannot_come_back(app):
    async with page_client(app) as https:
        assert "plain HTTP" not in (await https.get("/admin/login")).text
    plain = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ops.example.internal"
    )
    async with plain:
        form = (await plain.get("/admin/login")).text
    assert "came over plain HTTP" in form and "API__SESSION_COOKIE_SECURE=false" in form


async def test_unknown_pages_and_versions_are_html_errors(browser_like, root):
    await log_in(browser_like, root.key)
    missing = await browser_like.get("/admin/no-such-page")
    assert missing.status_code == 404 and "<h2>404</h2>" in missing.text
    version = await browser_like.get("/admin/models/999999/report.png")
    assert version.status_code == 404 and "model version 999999 does not exist" in version.text
    window = await browser_like.get("/admin/?days=90")
    assert window.status_code == 422 and "days" in window.text
