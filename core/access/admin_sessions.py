"""Logins to the operator page: an admin API key exchanged for a session, checked on each use.

A session names the admin client and a fingerprint of the key it was opened with, never the
key. Each use looks the client up again, so a session ends as soon as its client is revoked,
loses the admin role, or has that key replaced (after the rotation's grace period).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session

from core.access.clients import Caller, ClientService, key_digest
from core.errors import PermissionDenied, Unauthenticated
from core.store.db import StoreService
from core.store.tables import ApiClient, ClientRole, as_utc, utcnow

FINGERPRINT_CHARS = 16
"""Hex digits of the key's sha256 a session keeps: enough to tell one key of a client from the
next, too few to stand for the key."""


@dataclass(frozen=True)
class AdminSession:
    """Who an operator-page session belongs to."""

    client_id: int
    name: str
    key_fingerprint: str


def fingerprint(key: str) -> str:
    return key_digest(key)[:FINGERPRINT_CHARS]


class AdminSessions(StoreService):
    def __init__(self, engine: Engine, clients: ClientService) -> None:
        super().__init__(engine)
        self._clients = clients

    async def open(self, key: str) -> AdminSession:
        """A session for the admin client holding ``key``: Unauthenticated for an unknown or
        revoked key, PermissionDenied for a client key."""
        caller = await self._clients.authenticate(key)
        if not caller.is_admin:
            raise PermissionDenied(
                f"{caller.name!r} holds a client key; the operator page is for admin keys only"
            )
        return AdminSession(caller.id, caller.name, fingerprint(key))

    async def check(self, session: AdminSession) -> Caller:
        """The admin behind a session still holds the key it was opened with, or
        Unauthenticated (PermissionDenied if the client is no longer an admin)."""
        return await self._run(_check, session)


def _check(engine: Engine, login: AdminSession) -> Caller:
    with Session(engine) as session:
        client = session.get(ApiClient, login.client_id)
    if client is None or client.revoked_at is not None:
        raise Unauthenticated(f"the key of {login.name!r} was revoked: log in with another")
    if client.role != ClientRole.ADMIN:
        raise PermissionDenied(f"{client.name!r} is no longer an admin")
    if not _holds(client, login.key_fingerprint):
        raise Unauthenticated(
            f"the key of {login.name!r} this login used was replaced: log in with the new one"
        )
    return Caller(login.client_id, client.name, client.role, tuple(client.webhook_secrets))


def _holds(client: ApiClient, key_fingerprint: str) -> bool:
    if client.key_sha256.startswith(key_fingerprint):
        return True
    previous, expires = client.previous_key_sha256, client.previous_key_expires_at
    return (
        previous is not None
        and previous.startswith(key_fingerprint)
        and expires is not None
        and as_utc(expires) > utcnow()
    )
