"""/stats (this merchant's last 7 days and the model) and /queue (the reviews to check first)."""

from __future__ import annotations

from datetime import timedelta

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot import texts
from bot.keyboards import ButtonSigner, label_keyboard
from core.access.merchants import Member, Overview
from core.store.tables import saved_id, utcnow
from core.wiring import Core
from serving.base import Label

QUEUE_SIZE = 5
QUEUE_DAYS = 7


def router() -> Router:
    router = Router(name="stats")
    router.message.register(show_stats, Command("stats"))
    router.message.register(show_queue, Command("queue"))
    return router


async def show_stats(message: Message, core: Core, member: Member, lang: texts.Lang) -> None:
    overview = await core.merchants.overview(member, days=QUEUE_DAYS)
    await message.answer(render_overview(overview, lang))


def render_overview(overview: Overview, lang: texts.Lang) -> str:
    stats = overview.stats
    text = texts.t(
        "stats",
        lang,
        reviews=stats.reviews,
        positive_rate=texts.percent(stats.positive_rate),
        labelled=stats.labelled,
        corrections=stats.corrections,
        correction_rate=texts.percent(stats.correction_rate),
    )
    model = overview.model
    if model is None:
        return f"{text}\n{texts.t('no_model', lang)}"
    accuracy = model.metrics.get("accuracy")
    shown = "—" if accuracy is None else f"{accuracy:.1%}"
    line = texts.t("stats_model", lang, id=model.id, backend=model.backend, accuracy=shown)
    return f"{text}\n{line}"


async def show_queue(
    message: Message, core: Core, member: Member, buttons: ButtonSigner, lang: texts.Lang
) -> None:
    records = await core.reviews.least_confident(
        tenant=member.tenant,
        since=utcnow() - timedelta(days=QUEUE_DAYS),
        limit=QUEUE_SIZE,
    )
    if not records:
        await message.answer(texts.t("queue_empty", lang))
        return
    await message.answer(texts.t("queue_head", lang, count=len(records)))
    for record in records:
        prediction = record.prediction
        assert prediction is not None
        assert prediction.id is not None
        label = Label(prediction.label)
        verdict = texts.verdict(label, prediction.confidence, prediction.fallback, lang)
        await message.answer(
            f"{texts.quoted(record.review.text)}\n{verdict}",
            reply_markup=label_keyboard(
                buttons,
                chat_id=message.chat.id,
                review_id=saved_id(record.review),
                prediction_id=prediction.id,
                predicted=label,
                lang=lang,
            ),
        )
