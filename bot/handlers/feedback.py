"""Button presses: confirm or correct a verdict (a label event), and undo it."""

from __future__ import annotations

from datetime import timedelta

from aiogram import Bot, Router
from aiogram.types import CallbackQuery, InaccessibleMessage, InlineKeyboardMarkup, Message

from bot import texts
from bot.keyboards import (
    ButtonSigner,
    LabelPress,
    SignedPress,
    UndoPress,
    label_keyboard,
    undo_keyboard,
)
from core.access.merchants import Member
from core.store.tables import LabelKind, Source, saved_id
from core.wiring import Core
from serving.base import Label


def router() -> Router:
    router = Router(name="feedback")
    router.callback_query.register(on_label, SignedPress(LabelPress))
    router.callback_query.register(on_undo, SignedPress(UndoPress))
    return router


async def on_label(
    callback: CallbackQuery,
    press: LabelPress,
    message: Message | InaccessibleMessage,
    bot: Bot,
    core: Core,
    member: Member,
    buttons: ButtonSigner,
    lang: texts.Lang,
) -> None:
    """✅ or ❌: a label of the verdict, with what became of it, and an undo button."""
    labelled = await core.feedback.record(
        press.review,
        Label(press.label),
        actor=member.principal.actor,
        channel=Source.TELEGRAM,
        tenant=member.principal.scope,
        prediction_id=press.prediction,
        role=member.principal.role,
    )
    event = labelled.event
    await callback.answer(texts.t("recorded", lang))
    done = "confirmed" if event.kind == LabelKind.CONFIRMATION else "corrected"
    note = "\n".join(
        [
            texts.t(done, lang, label=texts.label_name(Label(event.label), lang)),
            texts.fate(labelled.fate, lang),
        ]
    )
    markup = undo_keyboard(buttons, chat_id=message.chat.id, event_id=saved_id(event), lang=lang)
    await _show(bot, message, note, markup)


async def on_undo(
    callback: CallbackQuery,
    press: UndoPress,
    message: Message | InaccessibleMessage,
    bot: Bot,
    core: Core,
    member: Member,
    buttons: ButtonSigner,
    lang: texts.Lang,
) -> None:
    """↩: the label is revoked and the verdict's buttons come back."""
    event = await core.feedback.revoke(
        press.event,
        actor=None if member.is_admin else member.principal.actor,
        tenant=member.principal.scope,
        within=timedelta(minutes=core.settings.telegram.undo_minutes),
    )
    await callback.answer(texts.t("undone", lang))
    answered = Label(event.label)
    predicted = answered if event.kind == LabelKind.CONFIRMATION else Label(1 - answered)
    relabel = None
    if event.prediction_id is not None:
        relabel = label_keyboard(
            buttons,
            chat_id=message.chat.id,
            review_id=event.review_id,
            prediction_id=event.prediction_id,
            predicted=predicted,
            lang=lang,
        )
    await _show(bot, message, None, relabel)


async def _show(
    bot: Bot,
    message: Message | InaccessibleMessage,
    note: str | None,
    markup: InlineKeyboardMarkup | None,
) -> None:
    """The verdict (the text before the first blank line), the note under it, new buttons.
    A message Telegram no longer shows us (older than 48 h) only gets its buttons swapped."""
    if isinstance(message, Message) and message.text:
        head = message.text.split("\n\n", 1)[0]
        await message.edit_text(f"{head}\n\n{note}" if note else head, reply_markup=markup)
    else:
        await bot.edit_message_reply_markup(
            chat_id=message.chat.id, message_id=message.message_id, reply_markup=markup
        )
