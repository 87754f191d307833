"""The operator page in a real headless chromium, against the API served by uvicorn on
loopback: log in, see the versions, promote through the gate, be refused without an admin key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING

import pytest

from api.main import create_app
from core.models import registry
from core.store.tables import ModelStatus, saved_id
from core.wiring import Core
from tests.api.admin.browser import CHROMIUM, chromium, log_in, why_no_browser
from tests.api.admin.conftest import same_model, worse_model
from tests.support.loopback import served_in_thread

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.skipif(why_no_browser() is not None, reason=str(why_no_browser()))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import Error

    with ExitStack() as stack:
        try:
            started = stack.enter_context(chromium())
        except Error as error:
            pytest.skip(f"chromium at {CHROMIUM} does not start: {error.message.splitlines()[0]}")
        yield started


@pytest.fixture
def server(core: Core) -> Iterator[str]:
    core.settings.api.rate_limit = "100000/second"
    with served_in_thread(create_app(core)) as base_url:
        yield base_url


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    yield context.new_page()
    context.close()


def row(page: Page, version_id: int | None):
    return page.locator(f"#version-{version_id}")


def promote(page: Page, version_id: int | None, *, force: bool = False) -> str:
    """Press the version's Promote button (ticking force first if asked); the page's message."""
    if force:
        row(page, version_id).get_by_label("force").check()
    row(page, version_id).get_by_role("button", name="Promote").click()
    page.wait_for_load_state()
    return page.locator(".flash").inner_text()


def test_an_admin_logs_in_and_sees_every_version_with_its_figures(server, page, core, root):
    active = registry.active(core.engine)
    candidate = same_model(core)
    log_in(page, server, root.key)
    assert page.url == f"{server}/admin/"
    assert page.get_by_role("heading", name="Model versions").is_visible()
    assert "root" in page.locator("header.top").inner_text()
    active_row = row(page, active.id).inner_text()
    assert "active" in active_row and f"{active.metrics['accuracy']:.4f}" in active_row
    assert f"{active.metrics['macro_f1']:.4f}" in active_row
    assert f"{active.metrics['ece']:.4f}" in active_row
    assert "candidate" in row(page, candidate.id).inner_text()
    report = page.locator("details.report[open] img")
    report.scroll_into_view_if_needed()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=report.element_handle()
    )
    assert report.evaluate("img => img.naturalWidth") == 1200, "the report picture loaded"
    for section in ("Retrain requests", "Recent gate decisions", "Label conflicts"):
        assert page.get_by_role("heading", name=section).is_visible()

    page.get_by_role("button", name="Log out").click()
    page.wait_for_load_state()
    assert page.url == f"{server}/admin/login"
    page.goto(f"{server}/admin/")
    assert page.url == f"{server}/admin/login", "logged out: the page asks for a key again"


def test_promotions_go_through_the_gate_and_forcing_is_recorded(server, page, core, root):
    good = same_model(core)
    worse = worse_model(core)
    log_in(page, server, root.key)

    said = promote(page, good.id)
    assert f"Version {good.id} is active, through the gate" in said
    assert "not worse" in said
    assert "active" in row(page, good.id).locator(".badge").first.inner_text()

    said = promote(page, worse.id)
    assert said.startswith(f"The gate refused: the gate keeps model version {worse.id} out:")
    assert "below the active model's" in said
    assert "rejected" in row(page, worse.id).inner_text()
    assert registry.active(core.engine).id == good.id
    decisions = page.locator("#decisions").inner_text()
    assert "refused" in decisions and "below the active model's" in decisions

    said = promote(page, worse.id, force=True)
    assert f"Version {worse.id} is active, forced past the gate" in said
    assert "forced by root (operator page)" in row(page, worse.id).inner_text()
    forced = registry.get(core.engine, saved_id(worse))
    assert forced.status == ModelStatus.ACTIVE
    assert forced.metrics["forced"]["by"] == "root (operator page)"

    page.get_by_role("button", name=f"Roll back to version {good.id}").click()
    page.wait_for_load_state()
    assert f"version {good.id} is active again" in page.locator(".flash").inner_text()
    assert registry.active(core.engine).id == good.id


def test_without_an_admin_key_the_page_stays_shut(server, page, core, acme):
    active = registry.active(core.engine)
    page.goto(f"{server}/admin")
    assert page.url == f"{server}/admin/login"
    assert "log in with an admin key" in page.locator(".flash").inner_text()
    page.goto(f"{server}/admin/models/{active.id}/report.png")
    assert page.url == f"{server}/admin/login", "no picture, the login form"
    picture = page.request.get(f"{server}/admin/models/{active.id}/report.png")
    assert picture.status == 401

    log_in(page, server, acme.key)
    assert page.url == f"{server}/admin/login"
    assert "the operator page is for admin keys only" in page.locator(".flash").inner_text()
    page.goto(f"{server}/admin/")
    assert page.url == f"{server}/admin/login"

    log_in(page, server, "wmk_a-key-nobody-was-given")
    assert "not valid (unknown or revoked)" in page.locator(".flash").inner_text()
    page.goto(f"{server}/admin/")
    assert page.url == f"{server}/admin/login"
