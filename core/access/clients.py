"""API clients: keys shown once and stored as a sha256, roles, webhook secrets and signatures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from standardwebhooks import Webhook, WebhookVerificationError

from core.access.principal import Principal
from core.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from core.store.db import unit_of_work
from core.store.tables import ApiClient, ClientRole, as_utc, saved_id, utcnow

KEY_PREFIX = "wmk_"
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
WEBHOOK_TOLERANCE_S = 300
"""How far a webhook's timestamp may be from now (fixed by the Standard Webhooks package)."""
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Caller:
    """An authenticated API client, as the front door needs it."""

    id: int
    name: str
    role: ClientRole
    webhook_secrets: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return self.role == ClientRole.ADMIN

    @property
    def principal(self) -> Principal:
        return Principal(actor=self.name, tenant=self.name, is_admin=self.is_admin)


@dataclass(frozen=True)
class IssuedClient:
    """A new client with its key and webhook secret, which are shown this once."""

    client: ApiClient
    key: str
    webhook_secret: str


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    """32 random bytes, URL-safe, with the prefix that says what it is."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_webhook_secret() -> str:
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class ClientService:
    def __init__(self, engine: Engine, *, cache_s: float) -> None:
        self._engine = engine
        self._cache_s = cache_s
        self._verified: dict[str, tuple[Caller, float]] = {}

    def create(self, name: str, role: ClientRole = ClientRole.CLIENT) -> IssuedClient:
        """Register a client; its key (32 random bytes) is returned here and never again."""
        if not _NAME.fullmatch(name):
            raise InvalidInput(
                f"client name {name!r}: use 1-64 lower-case letters, digits, '_', '.' or '-'"
            )
        key = new_key()
        secret = new_webhook_secret()
        try:
            with unit_of_work(self._engine) as session:
                if session.exec(select(ApiClient).where(ApiClient.name == name)).first():
                    raise Conflict(f"a client named {name!r} exists already")
                client = ApiClient(
                    name=name, role=role, key_sha256=key_digest(key), webhook_secrets=[secret]
                )
                session.add(client)
                session.flush()
        except IntegrityError:
            raise Conflict(f"a client named {name!r} exists already") from None
        return IssuedClient(client, key, secret)

    async def authenticate(self, key: str) -> Caller:
        """The live client holding ``key``, or Unauthenticated.

        The key is looked up by its sha256, so how long the lookup takes says nothing about how
        close a guess was; a verified key is remembered for ``cache_s`` seconds.
        """
        digest = key_digest(key)
        remembered = self._verified.get(digest)
        if remembered is not None and remembered[1] > time.monotonic():
            return remembered[0]
        caller = await asyncio.to_thread(self._lookup, digest)
        self._verified[digest] = (caller, time.monotonic() + self._cache_s)
        return caller

    def _lookup(self, digest: str) -> Caller:
        with Session(self._engine) as session:
            client = session.exec(
                select(ApiClient).where(
                    or_(
                        col(ApiClient.key_sha256) == digest,
                        col(ApiClient.previous_key_sha256) == digest,
                    )
                )
            ).first()
        if client is None or client.revoked_at is not None:
            raise Unauthenticated("the API key is not valid (unknown or revoked)")
        if not hmac.compare_digest(client.key_sha256, digest):
            expires = client.previous_key_expires_at
            if expires is None or as_utc(expires) <= utcnow():
                raise Unauthenticated("the API key was replaced by a newer one; use that")
        return Caller(saved_id(client), client.name, client.role, tuple(client.webhook_secrets))

    def list_clients(self) -> list[ApiClient]:
        with Session(self._engine) as session:
            return list(session.exec(select(ApiClient).order_by(col(ApiClient.id))).all())

    def revoke(self, name: str) -> ApiClient:
        """Revoke a client's key: it is refused from now on (by other processes after their
        ``cache_s``)."""
        with unit_of_work(self._engine) as session:
            client = self._get(session, name)
            if client.revoked_at is not None:
                raise Conflict(f"client {name!r} was already revoked")
            client.revoked_at = utcnow()
            session.add(client)
        self._forget(name)
        return client

    def rotate_key(self, name: str, grace: timedelta) -> str:
        """A new API key for the client, returned this once; the key it replaces is accepted
        for ``grace`` more (zero: refused at once, e.g. for a leaked key)."""
        if grace < timedelta(0):
            raise InvalidInput("the grace period cannot be negative")
        key = new_key()
        with unit_of_work(self._engine) as session:
            client = self._get(session, name)
            if client.revoked_at is not None:
                raise Conflict(f"client {name!r} is revoked; create a new client instead")
            client.previous_key_sha256 = client.key_sha256 if grace else None
            client.previous_key_expires_at = utcnow() + grace if grace else None
            client.key_sha256 = key_digest(key)
            session.add(client)
        self._forget(name)
        return key

    def rotate_webhook_secret(self, name: str) -> str:
        """A new webhook secret; the previous one stays valid until the next rotation."""
        secret = new_webhook_secret()
        with unit_of_work(self._engine) as session:
            client = self._get(session, name)
            client.webhook_secrets = [secret, *client.webhook_secrets[:1]]
            session.add(client)
        self._forget(name)
        return secret

    def verify_webhook(self, caller: Caller, body: bytes, headers: Mapping[str, str]) -> None:
        """Check a Standard Webhooks signature (``webhook-id``, ``webhook-timestamp``,
        ``webhook-signature``) over ``body`` against each of the caller's secrets."""
        wanted = {name: headers.get(name, "") for name in _WEBHOOK_HEADERS}
        reason = "no webhook secret is set for this client"
        for secret in caller.webhook_secrets:
            try:
                Webhook(secret).verify(body, wanted, json_parse=False)
            except WebhookVerificationError as error:
                reason = str(error)
            except UnicodeDecodeError:
                reason = "the body is not UTF-8"
            except ValueError:
                reason = "malformed webhook-signature header (expected 'v1,<base64>' items)"
            else:
                return
        raise Unauthenticated(f"the webhook signature was refused: {reason}")

    def _get(self, session: Session, name: str) -> ApiClient:
        client = session.exec(
            select(ApiClient).where(ApiClient.name == name).with_for_update()
        ).first()
        if client is None:
            raise NotFound(f"there is no client named {name!r}")
        return client

    def _forget(self, name: str) -> None:
        for digest, (caller, _) in list(self._verified.items()):
            if caller.name == name:
                self._verified.pop(digest, None)


_WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
