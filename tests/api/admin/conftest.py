"""The operator page under test: clients over HTTPS (the session cookie is Secure), logins,
the form token, and model versions for the gate to judge."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from core.models import registry
from core.models.dataset import load_split
from core.store.tables import ModelVersion, Split
from core.wiring import Core
from retrain.trainers.local import fit
from serving.base import Label

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def page_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="https://testserver",
        headers={"Accept": "text/html"},
    )


@pytest.fixture
async def browser_like(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies and asks for HTML, as a browser does."""
    async with page_client(app) as client:
        yield client


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has a form token"
    return found[1]


async def log_in(http: httpx.AsyncClient, key: str) -> httpx.Response:
    """The login form filled in and sent, as a person would."""
    form = await http.get("/admin/login")
    return await http.post("/admin/login", data={"key": key, "csrf": csrf_of(form.text)})


async def post_form(
    http: httpx.AsyncClient, path: str, data: dict[str, str] | None = None
) -> httpx.Response:
    """A form of the operator page sent with the page's token, the redirect followed."""
    page = await http.get("/admin/")
    sent = await http.post(path, data={"csrf": csrf_of(page.text), **(data or {})})
    assert sent.status_code == 303, sent.text
    return await http.get(sent.headers["location"])


def same_model(core: Core) -> ModelVersion:
    """A candidate as good as the active model (the same artifact): the gate lets it in."""
    active = registry.active(core.engine)
    return registry.register(core.engine, backend="local", model_ref=active.model_ref, metrics={})


def worse_model(core: Core) -> ModelVersion:
    """A CPU model trained on 300 holdout reviews with their labels flipped: the gate keeps it
    out."""
    texts, labels = load_split(core.engine, Split.TEST)
    flipped = [Label(1 - label) for label in labels[:300]]
    model = fit(texts[:300], flipped, core.settings.local.ngram_max)
    model.save(core.settings.local.dir / "flipped", {"examples": 300})
    return registry.register(core.engine, backend="local", model_ref="flipped", metrics={})
