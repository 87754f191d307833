"""Admins only: /model (the active model's report picture, its holdout figures in the caption)
and /retrain."""

from __future__ import annotations

import logging

from aiogram import Bot, Router
from aiogram.filters import Command
from aiogram.types import BufferedInputFile, Message

from bot import texts
from bot.chat_action import ChatAction
from core.access.merchants import Member
from core.errors import PermissionDenied
from core.store.tables import ModelVersion, saved_id
from core.wiring import Core

log = logging.getLogger(__name__)

MAX_CAPTION_CHARS = 1024
"""Telegram's limit on a photo's caption."""


def router() -> Router:
    router = Router(name="admin")
    router.message.register(show_model, Command("model"))
    router.message.register(request_retrain, Command("retrain"))
    return router


def _admin_only(member: Member) -> None:
    if not member.is_admin:
        raise PermissionDenied(f"{member.actor} is not an admin", code="admins_only")


async def show_model(
    message: Message, bot: Bot, core: Core, member: Member, lang: texts.Lang
) -> None:
    """The report picture with the figures as its caption; the figures alone (and a word why)
    when the picture cannot be drawn."""
    _admin_only(member)
    model = await core.models.active()
    caption = texts.shortened(render_model(model, lang), MAX_CAPTION_CHARS)
    try:
        async with ChatAction(bot, message.chat.id, "upload_photo"):
            picture = await core.reports.png(model.id)
    except Exception:
        log.exception("the report of model version %s could not be drawn", model.id)
        await message.answer(f"{caption}\n{texts.t('model_report_missing', lang)}")
        return
    await message.answer_photo(
        BufferedInputFile(picture, filename=f"model_{model.id}_report.png"), caption=caption
    )


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
