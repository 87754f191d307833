"""What Telegram shows of the bot before anyone writes to it: the "/" menu and the descriptions,
in Chinese (``language_code="zh"``) and, for every other language, English. Admins get their
two commands more in their own chats. Set at every start (polling or webhook), in the
background; Telegram keeps the last one set."""

from __future__ import annotations

import asyncio
import logging

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import BotCommand, BotCommandScopeChat, BotCommandScopeDefault

from bot import texts

log = logging.getLogger(__name__)

LANGUAGES: tuple[tuple[texts.Lang, str | None], ...] = (("en", None), ("zh", "zh"))
"""(our language, Telegram's language_code): None is the default, for every language."""
MAX_DELAY_S = 3600.0


async def introduce(bot: Bot, admins: list[int], first_delay_s: float = 60.0) -> None:
    """Set the menu and the descriptions; Telegram out of reach or asking to wait is tried again
    later (the bot works meanwhile), anything else it refuses is logged."""
    delay = first_delay_s
    while True:
        try:
            await _introduce_to_everyone(bot)
            break
        except (TelegramNetworkError, TelegramServerError, TelegramRetryAfter) as error:
            wait = error.retry_after if isinstance(error, TelegramRetryAfter) else delay
            delay = min(delay * 2, MAX_DELAY_S)
            log.warning("the bot's menu is not set yet (%s); trying again in %s s", error, wait)
            await asyncio.sleep(wait)
        except TelegramAPIError:
            log.exception("Telegram refused the bot's menu or description")
            return
    for admin in admins:
        try:
            for lang, code in LANGUAGES:
                await bot.set_my_commands(
                    _menu(lang, admin=True),
                    scope=BotCommandScopeChat(chat_id=admin),
                    language_code=code,
                )
        except TelegramAPIError as error:  # e.g. an admin who never opened the bot: no chat
            log.warning("admin %s gets the merchants' menu: %s", admin, error)


async def _introduce_to_everyone(bot: Bot) -> None:
    for lang, code in LANGUAGES:
        await bot.set_my_commands(
            _menu(lang, admin=False), scope=BotCommandScopeDefault(), language_code=code
        )
        await bot.set_my_description(texts.pick(texts.DESCRIPTION, lang), language_code=code)
        await bot.set_my_short_description(
            texts.pick(texts.SHORT_DESCRIPTION, lang), language_code=code
        )


def _menu(lang: texts.Lang, *, admin: bool) -> list[BotCommand]:
    return [
        BotCommand(command=command, description=description)
        for command, description in texts.commands(lang, admin=admin)
    ]
