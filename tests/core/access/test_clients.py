import asyncio
import base64
import hashlib
import hmac
import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from core.access.clients import Caller, ClientService, key_digest
from core.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from core.store.tables import ApiClient, ClientRole


def signed_headers(
    secret: str, body: bytes, *, webhook_id: str = "msg_1", timestamp: int | None = None
) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }


def test_a_key_is_shown_once_and_stored_only_as_its_sha256(engine: Engine):
    issued = ClientService(engine, cache_s=10).create("acme")
    assert issued.key.startswith("wmk_")
    assert len(base64.urlsafe_b64decode(issued.key.removeprefix("wmk_") + "==")) >= 32
    with Session(engine) as session:
        (stored,) = session.exec(select(ApiClient)).all()
    assert stored.key_sha256 == hashlib.sha256(issued.key.encode()).hexdigest()
    assert issued.key not in {str(value) for value in vars(stored).values()}
    assert stored.role == ClientRole.CLIENT
    assert stored.webhook_secrets == [issued.webhook_secret]


def test_names_are_unique_and_plain(engine: Engine):
    clients = ClientService(engine, cache_s=10)
    clients.create("acme")
    with pytest.raises(Conflict, match="exists"):
        clients.create("acme", ClientRole.ADMIN)
    for bad in ("", "Acme", "a b", "x" * 65, "-acme"):
        with pytest.raises(InvalidInput):
            clients.create(bad)


def test_a_valid_key_authenticates_and_others_do_not(engine: Engine):
    clients = ClientService(engine, cache_s=10)
    issued = clients.create("root", ClientRole.ADMIN)
    caller = asyncio.run(clients.authenticate(issued.key))
    assert (caller.name, caller.is_admin) == ("root", True)
    for wrong in ("", issued.key[:-1], issued.key + "x", "wmk_" + "A" * 43, "\ud800"):
        with pytest.raises(Unauthenticated):
            asyncio.run(clients.authenticate(wrong))


def test_a_revoked_key_is_refused_at_once_here_and_after_the_cache_time_elsewhere(engine: Engine):
    here = ClientService(engine, cache_s=10)
    elsewhere = ClientService(engine, cache_s=0.2)
    issued = here.create("acme")
    asyncio.run(here.authenticate(issued.key))
    asyncio.run(elsewhere.authenticate(issued.key))
    here.revoke("acme")
    with pytest.raises(Unauthenticated):
        asyncio.run(here.authenticate(issued.key))
    asyncio.run(elsewhere.authenticate(issued.key))  # still remembered for a moment
    time.sleep(0.25)
    with pytest.raises(Unauthenticated):
        asyncio.run(elsewhere.authenticate(issued.key))
    with pytest.raises(Conflict):
        here.revoke("acme")
    with pytest.raises(NotFound):
        here.revoke("nobody")
    (listed,) = here.list_clients()
    assert listed.revoked_at is not None


def test_a_rotated_key_keeps_the_client_and_the_old_key_works_for_the_grace_only(engine: Engine):
    clients = ClientService(engine, cache_s=0)
    old = clients.create("acme").key
    new = clients.rotate_key("acme", timedelta(hours=1))
    assert new != old
    assert asyncio.run(clients.authenticate(new)).name == "acme"
    assert asyncio.run(clients.authenticate(old)).name == "acme"

    newest = clients.rotate_key("acme", timedelta(0))
    for refused in (old, new):
        with pytest.raises(Unauthenticated, match="unknown or revoked"):
            asyncio.run(clients.authenticate(refused))
    assert asyncio.run(clients.authenticate(newest)).name == "acme"


def test_the_replaced_key_is_refused_once_its_grace_has_passed(engine: Engine):
    clients = ClientService(engine, cache_s=0)
    old = clients.create("acme").key
    new = clients.rotate_key("acme", timedelta(seconds=0.3))
    assert asyncio.run(clients.authenticate(old)).name == "acme"
    time.sleep(0.35)
    with pytest.raises(Unauthenticated, match="replaced by a newer one"):
        asyncio.run(clients.authenticate(old))
    assert asyncio.run(clients.authenticate(new)).name == "acme"


def test_a_revoked_client_cannot_rotate_and_refuses_both_keys(engine: Engine):
    clients = ClientService(engine, cache_s=0)
    old = clients.create("acme").key
    new = clients.rotate_key("acme", timedelta(hours=1))
    clients.revoke("acme")
    for key in (old, new):
        with pytest.raises(Unauthenticated):
            asyncio.run(clients.authenticate(key))
    with pytest.raises(Conflict, match="revoked"):
        clients.rotate_key("acme", timedelta(0))
    with pytest.raises(NotFound):
        clients.rotate_key("nobody", timedelta(0))
    with pytest.raises(InvalidInput):
        clients.rotate_key("acme", timedelta(seconds=-1))


def test_webhook_signatures_are_checked_against_every_live_secret(engine: Engine):
    clients = ClientService(engine, cache_s=0)
    issued = clients.create("acme")
    body = b'{"reviews": [{"text": "\xe5\xa5\xbd"}]}'

    def caller() -> Caller:
        return asyncio.run(clients.authenticate(issued.key))

    clients.verify_webhook(caller(), body, signed_headers(issued.webhook_secret, body))

    second = clients.rotate_webhook_secret("acme")
    for secret in (issued.webhook_secret, second):
        clients.verify_webhook(caller(), body, signed_headers(secret, body))

    third = clients.rotate_webhook_secret("acme")
    clients.verify_webhook(caller(), body, signed_headers(third, body))
    clients.verify_webhook(caller(), body, signed_headers(second, body))
    with pytest.raises(Unauthenticated, match="No matching signature"):
        clients.verify_webhook(caller(), body, signed_headers(issued.webhook_secret, body))


def test_several_signatures_in_one_header_pass_if_one_matches(engine: Engine):
    clients = ClientService(engine, cache_s=0)
    issued = clients.create("acme")
    caller = asyncio.run(clients.authenticate(issued.key))
    body = b"{}"
    headers = signed_headers(issued.webhook_secret, body)
    forged = "v1," + base64.b64encode(b"x" * 32).decode()
    headers["webhook-signature"] = f"{forged} v2,abc {headers['webhook-signature']}"
    clients.verify_webhook(caller, body, headers)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda h, b: (h, b + b" "), "No matching signature"),
        (lambda h, b: ({**h, "webhook-id": "msg_2"}, b), "No matching signature"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b), "Missing"),
        (lambda h, b: ({**h, "webhook-signature": "garbage"}, b), "malformed"),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "Invalid Signature Headers"),
        (lambda h, b: (h, b"\xff\xfe"), "not UTF-8"),
    ],
)
def test_a_tampered_delivery_is_refused_with_the_reason(engine: Engine, tamper, reason):
    clients = ClientService(engine, cache_s=0)
    issued = clients.create("acme")
    caller = asyncio.run(clients.authenticate(issued.key))
    body = b'{"a": 1}'
    headers, sent = tamper(signed_headers(issued.webhook_secret, body), body)
    with pytest.raises(Unauthenticated, match=reason):
        clients.verify_webhook(caller, sent, headers)


@pytest.mark.parametrize(("offset", "reason"), [(-301, "too old"), (301, "too new")])
def test_a_timestamp_over_300_seconds_away_is_refused(engine: Engine, offset, reason):
    clients = ClientService(engine, cache_s=0)
    issued = clients.create("acme")
    caller = asyncio.run(clients.authenticate(issued.key))
    body = b"{}"
    stale = signed_headers(issued.webhook_secret, body, timestamp=int(time.time()) + offset)
    with pytest.raises(Unauthenticated, match=reason):
        clients.verify_webhook(caller, body, stale)
    near = signed_headers(issued.webhook_secret, body, timestamp=int(time.time()) + offset // 2)
    clients.verify_webhook(caller, body, near)


def test_the_digest_is_hex_sha256():
    assert key_digest("abc") == hashlib.sha256(b"abc").hexdigest()
