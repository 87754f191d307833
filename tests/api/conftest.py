"""The API under test: an app over a core, clients with keys, and signed webhook deliveries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.main import create_app
from core.models import registry
from core.store.tables import ClientRole, saved_id
from core.wiring import Core
from migrations import upgrade_schema
from tests.conftest import make_settings


@dataclass(frozen=True)
class Key:
    name: str
    key: str
    webhook_secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def issue(core: Core, name: str, role: ClientRole = ClientRole.CLIENT) -> Key:
    issued = core.clients.create(name, role)
    return Key(name, issued.key, issued.webhook_secret)


def sign(
    secret: str, body: bytes, *, webhook_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for ``body``, computed by hand (not with the package)."""
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
        "content-type": "application/json",
    }


def body_of(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://testserver",
    )


@pytest.fixture
def app(core: Core) -> FastAPI:
    core.settings.api.rate_limit = "100000/second"
    return create_app(core)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client


@pytest.fixture
def acme(core: Core) -> Key:
    return issue(core, "acme")


@pytest.fixture
def globex(core: Core) -> Key:
    return issue(core, "globex")


@pytest.fixture
def root(core: Core) -> Key:
    return issue(core, "root", ClientRole.ADMIN)


@pytest.fixture
def store_core(db_url: str, trained_store: Path, tmp_path: Path) -> Iterator[Core]:
    """A core on a fresh store (SQLite or PostgreSQL) whose one model is the trained one."""
    shutil.copytree(trained_store / "models", tmp_path / "models")
    (artifact,) = [p.name for p in (tmp_path / "models").iterdir() if p.is_dir()]
    settings = make_settings(tmp_path, db_url)
    settings.api.rate_limit = "100000/second"
    core = Core(settings)
    upgrade_schema(core.engine)
    version = registry.register(core.engine, backend="local", model_ref=artifact, metrics={})
    registry.promote(core.engine, saved_id(version))
    yield core
    core.engine.dispose()
