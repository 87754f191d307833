"""Operator-page logins: opened with an admin key, ended by its revocation or replacement."""

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from core.access.admin_sessions import AdminSessions, fingerprint
from core.access.clients import ClientService
from core.errors import PermissionDenied, Unauthenticated
from core.store.tables import ClientRole


@pytest.fixture
def clients(engine: Engine) -> ClientService:
    return ClientService(engine, cache_s=0)


@pytest.fixture
def sessions(engine: Engine, clients: ClientService) -> AdminSessions:
    return AdminSessions(engine, clients)


async def test_an_admin_key_opens_a_session_that_keeps_no_key(clients, sessions):
    issued = clients.create("ops", ClientRole.ADMIN)
    session = await sessions.open(issued.key)
    assert (session.name, session.client_id) == ("ops", issued.client.id)
    assert session.key_fingerprint == fingerprint(issued.key)
    assert issued.key not in repr(session) and issued.client.key_sha256 not in repr(session)
    assert (await sessions.check(session)).name == "ops"


async def test_client_keys_and_unknown_keys_open_none(clients, sessions):
    shop = clients.create("shop")
    with pytest.raises(PermissionDenied, match="admin keys only"):
        await sessions.open(shop.key)
    with pytest.raises(Unauthenticated, match="not valid"):
        await sessions.open("wmk_not-a-key")


async def test_revoking_the_client_ends_its_sessions(clients, sessions):
    session = await sessions.open(clients.create("ops", ClientRole.ADMIN).key)
    clients.revoke("ops")
    with pytest.raises(Unauthenticated, match="revoked"):
        await sessions.check(session)


async def test_a_replaced_key_ends_its_sessions_once_its_grace_is_over(clients, sessions):
    old = await sessions.open(clients.create("ops", ClientRole.ADMIN).key)
    new_key = clients.rotate_key("ops", timedelta(hours=1))
    assert (await sessions.check(old)).name == "ops", "within the grace the old key still counts"
    new = await sessions.open(new_key)
    clients.rotate_key("ops", timedelta(0))
    for ended in (old, new):
        with pytest.raises(Unauthenticated, match="replaced"):
            await sessions.check(ended)
