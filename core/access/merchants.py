"""Who may use the Telegram bot (open, allowlist or invite codes), the invites, and a merchant's
overview. Admins come from the settings and are always admitted."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.access.principal import Principal
from core.classify.stats import Stats, stats
from core.config import TelegramSettings
from core.errors import NoActiveModel, PermissionDenied
from core.models import registry
from core.store.db import run_store_work, unit_of_work
from core.store.tables import ActorRole, Invite, ModelVersion, TelegramUser, utcnow

INVITE_CODE_BYTES = 9
"""12 URL-safe characters: fits Telegram's deep-link ``start`` parameter (at most 64)."""


@dataclass(frozen=True)
class Member:
    """An admitted Telegram user, as the front door needs to know them."""

    telegram_id: int
    role: ActorRole
    language: str

    @property
    def is_admin(self) -> bool:
        return self.role == ActorRole.ADMIN

    @property
    def tenant(self) -> str:
        """The tenant their reviews are stored under."""
        return f"telegram:{self.telegram_id}"

    @property
    def actor(self) -> str:
        """The actor their labels are recorded as."""
        return f"telegram:{self.telegram_id}"

    @property
    def principal(self) -> Principal:
        return Principal(actor=self.actor, tenant=self.tenant, is_admin=self.is_admin)


@dataclass(frozen=True)
class Overview:
    """A merchant's recent reviews and the model answering them."""

    stats: Stats
    since: datetime
    model: ModelVersion | None


class MerchantService:
    """The bot's members. The async methods are the bot's, called from its event loop (their
    store work runs where ``run_store_work`` puts it); ``create_invite`` is the CLI's."""

    def __init__(self, engine: Engine, settings: TelegramSettings) -> None:
        self._engine = engine
        self._settings = settings

    async def admit(
        self, telegram_id: int, *, language: str = "", invite_code: str | None = None
    ) -> Member:
        """The member, admitted by the access mode; PermissionDenied (nothing stored) if not.

        open: everyone. allowlist: the listed ids. invite: whoever joined with an invite code,
        or presents an unused one now (it is then used up). Admins: always.
        """
        return await run_store_work(
            self._engine, partial(self._admit, telegram_id, language, invite_code)
        )

    async def languages(self, telegram_ids: Sequence[int]) -> dict[int, str]:
        """The Telegram language each of these users last wrote in ("" if never seen)."""
        return await run_store_work(self._engine, partial(self._languages, telegram_ids))

    def _languages(self, telegram_ids: Sequence[int]) -> dict[int, str]:
        with Session(self._engine) as session:
            users = session.exec(
                select(TelegramUser).where(col(TelegramUser.telegram_id).in_(telegram_ids))
            ).all()
        known = {user.telegram_id: user.language for user in users}
        return {telegram_id: known.get(telegram_id, "") for telegram_id in telegram_ids}

    def _admit(self, telegram_id: int, language: str, invite_code: str | None) -> Member:
        try:
            return self._admit_in_one_transaction(telegram_id, language, invite_code)
        except IntegrityError:
            # Two updates of a new user raced to add them; the other one did.
            return self._admit_in_one_transaction(telegram_id, language, invite_code)

    def _admit_in_one_transaction(
        self, telegram_id: int, language: str, invite_code: str | None
    ) -> Member:
        role = ActorRole.ADMIN if telegram_id in self._settings.admins else ActorRole.MERCHANT
        with unit_of_work(self._engine) as session:
            user = session.get(TelegramUser, telegram_id)
            used_code = None
            if not self._admitted(role, telegram_id, user):
                if not invite_code or self._settings.access != "invite":
                    raise PermissionDenied(
                        f"telegram user {telegram_id} is not admitted ({self._settings.access})",
                        code="not_admitted",
                    )
                used_code = _use_invite(session, invite_code, telegram_id)
            if user is None:
                user = TelegramUser(
                    telegram_id=telegram_id, role=role, language=language, invite_code=used_code
                )
            elif user.role != role or (language and user.language != language) or used_code:
                user.role = role
                user.language = language or user.language
                user.invite_code = used_code or user.invite_code
            else:
                return _member(user)
            session.add(user)
            session.flush()
            return _member(user)

    def _admitted(self, role: ActorRole, telegram_id: int, user: TelegramUser | None) -> bool:
        if role == ActorRole.ADMIN or self._settings.access == "open":
            return True
        if self._settings.access == "allowlist":
            return telegram_id in self._settings.allowlist
        return user is not None and user.invite_code is not None

    def create_invite(self, *, created_by: str) -> Invite:
        """A new one-use invite code."""
        with unit_of_work(self._engine) as session:
            invite = Invite(code=secrets.token_urlsafe(INVITE_CODE_BYTES), created_by=created_by)
            session.add(invite)
            session.flush()
            return invite

    async def overview(self, member: Member, *, days: int = 7) -> Overview:
        """The member's reviews of the last ``days`` days and the active model (if any)."""
        return await run_store_work(self._engine, partial(self._overview, member, days))

    def _overview(self, member: Member, days: int) -> Overview:
        since = utcnow() - timedelta(days=days)
        counts = stats(self._engine, tenant=member.tenant, since=since)
        try:
            model: ModelVersion | None = registry.active(self._engine)
        except NoActiveModel:
            model = None
        return Overview(counts, since, model)


def _use_invite(session: Session, code: str, telegram_id: int) -> str:
    """Mark the invite used by ``telegram_id``; exactly one user can ever use a code."""
    used = session.execute(
        update(Invite)
        .where(col(Invite.code) == code, col(Invite.used_by).is_(None))
        .values(used_by=telegram_id, used_at=utcnow())
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        raise PermissionDenied(f"invite code {code!r} is unknown or used", code="invalid_invite")
    return code


def _member(user: TelegramUser) -> Member:
    return Member(user.telegram_id, ActorRole(user.role), user.language)
