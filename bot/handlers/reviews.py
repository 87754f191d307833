"""Any text message is one review: the verdict, with buttons to confirm or correct it."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import Message

from bot import texts
from bot.keyboards import ButtonSigner, label_keyboard
from core.access.merchants import Member
from core.classify.service import ReviewInput
from core.store.tables import Source
from core.wiring import Core


def router() -> Router:
    router = Router(name="reviews")
    router.message.register(unknown_command, F.text.startswith("/"))
    router.message.register(classify_review, F.text)
    router.message.register(not_a_review)
    return router


async def classify_review(
    message: Message, core: Core, member: Member, buttons: ButtonSigner, lang: texts.Lang
) -> None:
    assert message.text is not None
    (result,) = await core.classification.classify(
        [ReviewInput(message.text)], source=Source.TELEGRAM, tenant=member.tenant
    )
    verdict = result.verdict
    await message.reply(
        texts.verdict(verdict.label, verdict.confidence, result.fallback, lang),
        reply_markup=label_keyboard(
            buttons,
            chat_id=message.chat.id,
            review_id=result.review_id,
            prediction_id=result.prediction_id,
            predicted=verdict.label,
            lang=lang,
        ),
    )


async def unknown_command(message: Message, lang: texts.Lang) -> None:
    await message.answer(texts.t("unknown_command", lang))


async def not_a_review(message: Message, lang: texts.Lang) -> None:
    await message.answer(texts.t("not_text", lang))
