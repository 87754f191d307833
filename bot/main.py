"""Build the bot and its dispatcher from a Core, and run it by long polling (webhook mode:
bot/webhook.py)."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)

from bot import middlewares, texts
from bot.handlers import routers
from bot.keyboards import ButtonSigner
from core.config import TelegramSettings
from core.store.outbox import Event, RetrainFinished
from core.wiring import Core

log = logging.getLogger(__name__)


class BotNotConfigured(Exception):
    """TELEGRAM__TOKEN is not set."""


def create_bot(settings: TelegramSettings) -> Bot:
    """A Bot on ``settings.api_base`` whose sends wait out a 429 once."""
    if settings.token is None:
        raise BotNotConfigured("TELEGRAM__TOKEN is not set")
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.api_base))
    session.middleware(middlewares.RetryAfter())
    return Bot(settings.token.get_secret_value(), session=session)


def create_dispatcher(core: Core) -> Dispatcher:
    """The dispatcher with the core and the button signer in its workflow data."""
    settings = core.settings.telegram
    dispatcher = Dispatcher(
        disable_fsm=True, core=core, buttons=ButtonSigner.from_settings(settings)
    )
    if settings.mode == "polling":  # in webhook mode the database de-duplicates (bot/webhook.py)
        dispatcher.update.outer_middleware(middlewares.Deduplicate())
    dispatcher.update.outer_middleware(middlewares.ReplyOnError(core))
    dispatcher.update.outer_middleware(
        middlewares.Throttle(settings.throttle_messages, settings.throttle_window_s)
    )
    dispatcher.update.outer_middleware(middlewares.Admission())
    dispatcher.include_routers(*routers())
    dispatcher.startup.register(_subscribe_admins)
    dispatcher.shutdown.register(_unsubscribe_admins)
    return dispatcher


async def run(core: Core, *, handle_signals: bool = True) -> None:
    """Long polling until stopped (a signal, or cancellation when run beside the API).

    Telegram out of reach at the start is waited for; a token Telegram refuses is raised.
    """
    settings = core.settings.telegram
    bot = create_bot(settings)
    try:
        await wait_for_telegram(bot)
        await _warn_if_a_webhook_is_set(bot)
    except BaseException:
        await bot.session.close()
        raise
    await create_dispatcher(core).start_polling(
        bot, polling_timeout=settings.polling_timeout_s, handle_signals=handle_signals
    )


async def wait_for_telegram(
    bot: Bot, first_delay_s: float = 1.0, max_delay_s: float = 60.0
) -> None:
    """getMe until Telegram answers (aiogram's polling retries only getUpdates)."""
    delay = first_delay_s
    while True:
        try:
            me = await bot.me()
        except (TelegramNetworkError, TelegramServerError) as error:
            log.warning("Telegram is out of reach (%s); trying again in %.0f s", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
            continue
        log.info("Telegram bot @%s (id %s) starts polling", me.username, me.id)
        return


async def _warn_if_a_webhook_is_set(bot: Bot) -> None:
    """Telegram refuses getUpdates (409) while a webhook is set; say what to do about it."""
    try:
        info = await bot.get_webhook_info()
    except TelegramAPIError:
        return
    if info.url:
        log.error(
            "a webhook is set (%s), so Telegram refuses long polling until it is removed: run "
            "`waimai bot delete-webhook`, or set TELEGRAM__MODE=webhook and let the API serve it",
            info.url,
        )


async def bot_username(settings: TelegramSettings) -> str:
    """The bot's @username: from the settings if given, else asked from getMe."""
    if settings.bot_username:
        return settings.bot_username.removeprefix("@")
    bot = create_bot(settings)
    try:
        me = await bot.get_me()
    finally:
        await bot.session.close()
    if not me.username:
        raise BotNotConfigured("getMe gave no username; set TELEGRAM__BOT_USERNAME")
    return me.username


class TelegramUnreachable(Exception):
    """Telegram could not be reached to tell an admin; the notice is delivered again later."""


async def tell_admins(bot: Bot, admins: list[int], event: Event) -> None:
    """Admins hear how a retrain ended. Telegram out of reach (or asking to wait too long) for
    any admin is raised once all were tried, so that the notice comes again later (to all of
    them); an admin Telegram refuses (the bot blocked, no such chat) is skipped."""
    if not isinstance(event, RetrainFinished):
        return
    key = "retrain_promoted" if event.promoted else "retrain_rejected"
    text = texts.t(key, "zh", id=event.candidate_version_id or "?", reason=event.reason)
    unreached: list[int] = []
    for admin in admins:
        try:
            await bot.send_message(admin, text)
        except (TelegramNetworkError, TelegramServerError, TelegramRetryAfter) as error:
            log.warning("could not tell admin %s that a retrain finished: %s", admin, error)
            unreached.append(admin)
        except TelegramAPIError:
            log.exception("Telegram refused to tell admin %s that a retrain finished", admin)
    if unreached:
        raise TelegramUnreachable(f"admins {unreached} were not told")


async def _subscribe_admins(bot: Bot, core: Core, dispatcher: Dispatcher) -> None:
    dispatcher["unsubscribe_admins"] = core.notifications.subscribe(
        partial(tell_admins, bot, core.settings.telegram.admins)
    )


async def _unsubscribe_admins(dispatcher: Dispatcher) -> None:
    unsubscribe = dispatcher.workflow_data.pop("unsubscribe_admins", None)
    if unsubscribe is not None:
        unsubscribe()
