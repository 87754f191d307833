"""Admins only: /model (the active model and its holdout metrics) and /retrain."""

from __future__ import annotations

import asyncio

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot import texts
from core.access.merchants import Member
from core.errors import PermissionDenied
from core.models import registry
from core.store.tables import ModelVersion, saved_id
from core.wiring import Core


def router() -> Router:
    router = Router(name="admin")
    router.message.register(show_model, Command("model"))
    router.message.register(request_retrain, Command("retrain"))
    return router


def _admin_only(member: Member) -> None:
    if not member.is_admin:
        raise PermissionDenied(f"{member.actor} is not an admin", code="admins_only")


async def show_model(message: Message, core: Core, member: Member, lang: texts.Lang) -> None:
    _admin_only(member)
    model = await asyncio.to_thread(registry.active, core.engine)
    await message.answer(render_model(model, lang))


def render_model(model: ModelVersion, lang: texts.Lang) -> str:
    metrics = model.metrics

    def figure(name: str) -> str:
        value = metrics.get(name)
        return "—" if value is None else f"{value:.4f}"

    promoted = "—" if model.promoted_at is None else f"{model.promoted_at:%Y-%m-%d %H:%M} UTC"
    return texts.t(
        "model",
        lang,
        id=model.id,
        backend=model.backend,
        ref=model.model_ref,
        promoted=promoted,
        accuracy=figure("accuracy"),
        macro_f1=figure("macro_f1"),
        ece=figure("ece"),
    )


async def request_retrain(message: Message, core: Core, member: Member, lang: texts.Lang) -> None:
    _admin_only(member)
    ticket = await core.retrain_requests.request(
        requested_by=member.actor, reason="/retrain in Telegram"
    )
    request = ticket.request
    key = "retrain_new" if ticket.new else "retrain_pending"
    await message.answer(texts.t(key, lang, id=saved_id(request), by=request.requested_by))
