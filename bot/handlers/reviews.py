"""A text message is a review: the verdict, with buttons to confirm or correct it. A message of
several lines first asks (buttons) whether each line is a review of its own: then each line
gets its verdict, or, past ``LINES_AS_MESSAGES`` lines, a results file does.

Each review's external id is its chat, message and line, so that a message handled twice (a
restart while it waited in line) or a choice pressed twice stores its reviews once.
"""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InaccessibleMessage, Message

from bot import texts
from bot.chat_action import ChatAction
from bot.handlers.batch import send_results
from bot.keyboards import ButtonSigner, LinesPress, SignedPress, label_keyboard, lines_keyboard
from core.access.merchants import Member
from core.classify.service import Classified, ReviewInput
from core.errors import InvalidInput
from core.store.tables import Source
from core.wiring import Core

log = logging.getLogger(__name__)

LINES_AS_MESSAGES = 10
"""A message of up to this many lines gets a verdict message for each; more, a results file."""


def router() -> Router:
    """Last of the routers: it takes any message and any press the others leave."""
    router = Router(name="reviews")
    router.message.register(unknown_command, F.text.startswith("/"))
    router.message.register(on_text, F.text)
    router.message.register(not_a_review)
    router.callback_query.register(on_lines_choice, SignedPress(LinesPress))
    router.callback_query.register(on_unknown)
    return router


def review_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


async def on_text(
    message: Message,
    bot: Bot,
    core: Core,
    member: Member,
    buttons: ButtonSigner,
    lang: texts.Lang,
) -> None:
    assert message.text is not None
    lines = review_lines(message.text)
    if len(lines) < 2:
        await classify_whole(message, bot, core, member, buttons, lang)
        return
    await message.reply(
        texts.t("lines_offer", lang, count=len(lines)),
        reply_markup=lines_keyboard(
            buttons,
            chat_id=message.chat.id,
            message_id=message.message_id,
            count=len(lines),
            lang=lang,
        ),
    )


async def classify_whole(
    message: Message, bot: Bot, core: Core, member: Member, buttons: ButtonSigner, lang: texts.Lang
) -> None:
    """The message is one review: its verdict, in reply, with the label buttons."""
    assert message.text is not None
    review = ReviewInput(message.text, external_id=_external_id(message))
    async with ChatAction(bot, message.chat.id, "typing"):
        (result,) = await core.classification.classify(
            [review], source=Source.TELEGRAM, tenant=member.tenant
        )
    await _reply_verdict(message, result, buttons, lang)


async def on_lines_choice(
    callback: CallbackQuery,
    press: LinesPress,
    message: Message | InaccessibleMessage,
    bot: Bot,
    core: Core,
    member: Member,
    buttons: ButtonSigner,
    lang: texts.Lang,
) -> None:
    """The offer's buttons: each line a review, or the whole message one. The merchant's
    message is the one the offer replies to (Telegram sends it along with the press)."""
    original = message.reply_to_message if isinstance(message, Message) else None
    if original is None or original.message_id != press.message or not original.text:
        raise InvalidInput("the message with the lines is gone", code="message_gone")
    await callback.answer()
    assert isinstance(message, Message)
    if not press.each:
        await _settle(message, texts.t("whole_chosen", lang))
        await classify_whole(original, bot, core, member, buttons, lang)
        return
    lines = review_lines(original.text)
    if len(lines) > LINES_AS_MESSAGES:
        await _settle(message, texts.t("lines_file", lang, count=len(lines)))
        await _lines_as_file(original, lines, bot, core, member, lang)
        return
    await _settle(message, texts.t("lines_chosen", lang, count=len(lines)))
    base = _external_id(original)
    reviews = [ReviewInput(line, external_id=f"{base}:{n}") for n, line in enumerate(lines, 1)]
    async with ChatAction(bot, original.chat.id, "typing"):
        results = await core.classification.classify(
            reviews, source=Source.TELEGRAM, tenant=member.tenant
        )
    for number, result in enumerate(results, 1):
        await _reply_verdict(original, result, buttons, lang, number=number)


async def _settle(offer: Message, choice: str) -> None:
    """The offer says what was chosen, without its buttons. Pressed a second time, it already
    does (Telegram refuses the same edit): the choice is carried out again all the same."""
    try:
        await offer.edit_text(choice)
    except TelegramBadRequest as error:
        log.info("offer %s not edited: %s", offer.message_id, error)


async def _lines_as_file(
    original: Message, lines: list[str], bot: Bot, core: Core, member: Member, lang: texts.Lang
) -> None:
    content = "\n".join(lines).encode()

    async def fetch() -> bytes:
        return content

    async with ChatAction(bot, original.chat.id, "upload_document"):
        report = await core.batch.classify_file(
            f"message_{original.message_id}.txt",
            fetch,
            declared_size=len(content),
            source=Source.TELEGRAM,
            tenant=member.tenant,
        )
    await send_results(original, report, lang)


async def _reply_verdict(
    message: Message,
    result: Classified,
    buttons: ButtonSigner,
    lang: texts.Lang,
    *,
    number: int | None = None,
) -> None:
    verdict = result.verdict
    text = texts.verdict(verdict.label, verdict.confidence, result.fallback, lang)
    if number is not None:
        text = f"{number}. {texts.quoted(result.text, 60)}\n{text}"
    await message.reply(
        text,
        reply_markup=label_keyboard(
            buttons,
            chat_id=message.chat.id,
            review_id=result.review_id,
            prediction_id=result.prediction_id,
            predicted=verdict.label,
            lang=lang,
        ),
    )


def _external_id(message: Message) -> str:
    return f"telegram:{message.chat.id}:{message.message_id}"


async def unknown_command(message: Message, lang: texts.Lang) -> None:
    await message.answer(texts.t("unknown_command", lang))


async def not_a_review(message: Message, lang: texts.Lang) -> None:
    await message.answer(texts.t("not_text", lang))


async def on_unknown(callback: CallbackQuery) -> None:
    """Data that is no button of ours."""
    raise InvalidInput("unknown button data", code="bad_button")
