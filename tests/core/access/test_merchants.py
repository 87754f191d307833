"""Admission to the Telegram bot by access mode and invite codes; a merchant's overview."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlmodel import Session, select

from core.access.merchants import MerchantService
from core.classify.service import ReviewInput
from core.config import TelegramSettings
from core.errors import PermissionDenied
from core.store.tables import ActorRole, Invite, Source, TelegramUser
from core.wiring import Core

ADMIN, MERCHANT, STRANGER = 1, 2, 3


@pytest.fixture
def service(core: Core) -> Callable[..., MerchantService]:
    def make(access: str, **settings: object) -> MerchantService:
        return MerchantService(
            core.engine, TelegramSettings(**({"access": access, "admins": [ADMIN]} | settings))
        )

    return make


def users(core: Core) -> list[TelegramUser]:
    with Session(core.engine) as session:
        return list(session.exec(select(TelegramUser)).all())


async def test_open_mode_admits_everyone_and_remembers_them(core, service):
    member = await service("open").admit(STRANGER, language="en")
    assert (member.role, member.tenant, member.actor) == (
        ActorRole.MERCHANT,
        "telegram:3",
        "telegram:3",
    )
    (row,) = users(core)
    assert (row.telegram_id, row.language, row.invite_code) == (3, "en", None)


async def test_allowlist_mode(core, service):
    allowlist = service("allowlist", allowlist=[MERCHANT])
    assert (await allowlist.admit(MERCHANT)).role == ActorRole.MERCHANT
    with pytest.raises(PermissionDenied) as refused:
        await allowlist.admit(STRANGER)
    assert refused.value.code == "not_admitted"
    assert [u.telegram_id for u in users(core)] == [MERCHANT]
    # Taken off the list: refused again, although they were admitted before.
    with pytest.raises(PermissionDenied):
        await service("allowlist").admit(MERCHANT)


async def test_invite_codes_are_single_use(core, service):
    invites = service("invite")
    with pytest.raises(PermissionDenied) as refused:
        await invites.admit(STRANGER)
    assert refused.value.code == "not_admitted"
    with pytest.raises(PermissionDenied) as refused:
        await invites.admit(STRANGER, invite_code="nope")
    assert refused.value.code == "invalid_invite"
    assert users(core) == []

    code = invites.create_invite(created_by="cli").code
    assert len(code) == 12
    assert (await invites.admit(MERCHANT, invite_code=code)).telegram_id == MERCHANT
    assert (await invites.admit(MERCHANT)).telegram_id == MERCHANT, "admitted for good"
    with pytest.raises(PermissionDenied) as refused:
        await invites.admit(STRANGER, invite_code=code)
    assert refused.value.code == "invalid_invite"
    with Session(core.engine) as session:
        invite = session.get(Invite, code)
    assert invite is not None
    assert (invite.used_by, invite.created_by) == (MERCHANT, "cli")
    assert invite.used_at is not None


async def test_admins_come_from_the_settings(core, service):
    assert (await service("invite").admit(ADMIN)).is_admin
    # No longer listed: the same user is a merchant (and, in invite mode without a code, out).
    assert not (await service("open", admins=[]).admit(ADMIN)).is_admin
    with pytest.raises(PermissionDenied):
        await service("invite", admins=[]).admit(ADMIN)
    assert not (await service("open").admit(MERCHANT)).is_admin


async def test_overview_counts_only_the_members_reviews(core, service):
    merchants = service("open")
    member = await merchants.admit(MERCHANT)
    await core.classification.classify(
        [ReviewInput("太难吃了"), ReviewInput("好吃")], source=Source.TELEGRAM, tenant=member.tenant
    )
    await core.classification.classify([ReviewInput("好吃")], source=Source.TELEGRAM, tenant="x")
    overview = await merchants.overview(member)
    assert overview.stats.reviews == 2
    assert overview.model is not None
    assert overview.model.metrics["accuracy"] > 0.9


async def test_languages_are_read_without_admitting_anyone(core: Core, service):
    merchants = service("open", admins=[1])
    await merchants.admit(2, language="en-US")
    assert await merchants.languages([1, 2, 3]) == {1: "", 2: "en-US", 3: ""}
    assert [u.telegram_id for u in users(core)] == [2]
