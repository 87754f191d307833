"""What every update goes through, outermost first: de-duplication, error replies, the per-chat
throttle (bot/throttle.py), access control. And a session middleware that honours Telegram's 429
``retry_after``."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import TelegramObject, Update, User

from bot import texts
from core.errors import AppError
from core.wiring import Core

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]
_START = re.compile(r"/start(@\w+)?(\s|$)")


async def reply(update: Update, text: str) -> None:
    """Answer whoever sent the update: a message in their chat, or an alert on their press."""
    try:
        if update.callback_query is not None:
            await update.callback_query.answer(text, show_alert=True)
        elif update.message is not None:
            await update.message.answer(text)
    except Exception:
        log.exception("update %s: could not send a reply", update.update_id)


class Deduplicate(BaseMiddleware):
    """Drops an update whose id was seen recently (Telegram may deliver one twice)."""

    def __init__(self, remember: int = 10_000) -> None:
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._remember = remember

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        if event.update_id in self._seen:
            log.info("update %s was already handled; dropped", event.update_id)
            return None
        self._seen[event.update_id] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        return await handler(event, data)


class ReplyOnError(BaseMiddleware):
    """An AppError becomes a short reply; anything else is logged with the update id and
    answered with an apology. Nothing escapes, so the polling loop carries on."""

    def __init__(self, core: Core) -> None:
        settings = core.settings
        self._limits = {
            "max_mb": settings.telegram.max_file_mb,
            "max_chars": settings.serving.max_text_chars,
            "undo_minutes": settings.telegram.undo_minutes,
        }

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        lang = data["lang"] = texts.lang_of(data.get("event_from_user"))
        try:
            return await handler(event, data)
        except AppError as error:
            log.info("update %s: %s: %s", event.update_id, error.code, error.message)
            await reply(event, texts.error(error.code, lang, detail=error.message, **self._limits))
        except Exception:
            log.exception("update %s failed", event.update_id)
            await reply(event, texts.t("apology", lang))
        return None


class Admission(BaseMiddleware):
    """Only admitted users get past; ``member`` is handed to the handlers. ``/start`` goes on
    to its handler, which admits with the invite code it may carry."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        user: User | None = data.get("event_from_user")
        if user is None or user.is_bot:
            return None
        message = event.message
        if message is not None and message.text and _START.match(message.text):
            return await handler(event, data)
        core: Core = data["core"]
        data["member"] = await core.merchants.admit(user.id, language=user.language_code or "")
        return await handler(event, data)


class RetryAfter(BaseRequestMiddleware):
    """On a 429, waits ``retry_after`` seconds and tries once more (longer waits are raised)."""

    def __init__(self, max_wait_s: float = 60.0) -> None:
        self._max_wait_s = max_wait_s

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        try:
            return await make_request(bot, method)
        except TelegramRetryAfter as error:
            if error.retry_after > self._max_wait_s:
                raise
            log.warning(
                "%s: flood control, retrying in %s s", type(method).__name__, error.retry_after
            )
            await asyncio.sleep(error.retry_after)
            return await make_request(bot, method)
