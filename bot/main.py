"""Build the bot and its dispatcher from a Core, and run it by long polling (webhook mode:
bot/webhook.py)."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
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
from bot.introduction import introduce
from bot.keyboards import ButtonSigner
from bot.throttle import Backlog, NoBacklog, StoredBacklog, Throttle
from core.config import TelegramSettings
from core.store.outbox import BackendAlert, DriftNotice, Event, FineTuneNotice, RetrainFinished
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
    # A reply still goes out when its message was deleted meanwhile (it waited in line).
    default = DefaultBotProperties(allow_sending_without_reply=True)
    return Bot(settings.token.get_secret_value(), session=session, default=default)


def create_dispatcher(core: Core) -> Dispatcher:
    """The dispatcher with the core and the button signer in its workflow data. Its startup
    sets the bot's menu and description and subscribes the admins to their notices (and, when
    polling, handles the updates a previous run left waiting in a line); its shutdown stops the
    lines and unsubscribes."""
    settings = core.settings.telegram
    dispatcher = Dispatcher(
        disable_fsm=True, core=core, buttons=ButtonSigner.from_settings(settings)
    )
    # In webhook mode the database de-duplicates, and holds every update until it is handled.
    backlog: Backlog = NoBacklog()
    if settings.mode == "polling":
        dispatcher.update.outer_middleware(middlewares.Deduplicate())
        backlog = stored = StoredBacklog(core.telegram_updates)
        dispatcher.startup.register(stored.resume)
    throttle = Throttle(
        settings.throttle_messages, settings.throttle_window_s, settings.queue_messages, backlog
    )
    dispatcher.update.outer_middleware(middlewares.ReplyOnError(core))
    dispatcher.update.outer_middleware(throttle)
    dispatcher.update.outer_middleware(middlewares.Admission())
    dispatcher.include_routers(*routers())
    dispatcher.startup.register(_introduce)
    dispatcher.startup.register(_subscribe_admins)
    dispatcher.shutdown.register(throttle.close)
    dispatcher.shutdown.register(_stop_introducing)
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


def notice(event: Event, lang: texts.Lang) -> str | None:
    """What the admins are told of ``event`` (None: nothing). The reason or message inside is
    the publisher's own words."""
    if isinstance(event, RetrainFinished):
        key = "retrain_promoted" if event.promoted else "retrain_rejected"
        return texts.t(key, lang, id=event.candidate_version_id or "?", reason=event.reason)
    if isinstance(event, BackendAlert):
        return texts.t("backend_alert", lang, backend=event.backend, message=event.message)
    if isinstance(event, FineTuneNotice):
        return texts.t(f"finetune_{event.kind}", lang, job=event.job_id or "–", reason=event.reason)
    if isinstance(event, DriftNotice):
        return texts.t(
            f"drift_{event.kind}",
            lang,
            tenant=event.tenant or "–",
            rate=texts.percent(event.rate),
            threshold=texts.percent(event.threshold),
            count=event.count,
            hours=event.window_hours,
        )
    return None


async def tell_admins(bot: Bot, core: Core, event: Event) -> None:
    """Admins hear how a retrain ended, of a backend that cannot answer and of a fine-tune that
    needs them, each in their own language (their Telegram language, as the store last saw it).
    Telegram out of reach (or asking to wait too long) for any admin is raised once all were
    tried, so that the notice comes again later (to all of them); an admin Telegram refuses
    (the bot blocked, no such chat) is skipped."""
    if notice(event, "zh") is None:
        return
    unreached: list[int] = []
    languages = await core.merchants.languages(core.settings.telegram.admins)
    for admin in core.settings.telegram.admins:
        text = notice(event, texts.language(languages[admin]))
        assert text is not None
        try:
            await bot.send_message(admin, text)
        except (TelegramNetworkError, TelegramServerError, TelegramRetryAfter) as error:
            log.warning("could not tell admin %s of a %s: %s", admin, type(event).__name__, error)
            unreached.append(admin)
        except TelegramAPIError:
            log.exception("Telegram refused to tell admin %s of a %s", admin, type(event).__name__)
    if unreached:
        raise TelegramUnreachable(f"admins {unreached} were not told")


async def _subscribe_admins(bot: Bot, core: Core, dispatcher: Dispatcher) -> None:
    dispatcher["unsubscribe_admins"] = core.notifications.subscribe(partial(tell_admins, bot, core))


async def _introduce(bot: Bot, core: Core, dispatcher: Dispatcher) -> None:
    """In the background: a start must not wait on Telegram (it may be out of reach)."""
    dispatcher["introducing"] = asyncio.create_task(introduce(bot, core.settings.telegram.admins))


async def _stop_introducing(dispatcher: Dispatcher) -> None:
    introducing = dispatcher.workflow_data.pop("introducing", None)
    if introducing is not None:
        introducing.cancel()


async def _unsubscribe_admins(dispatcher: Dispatcher) -> None:
    unsubscribe = dispatcher.workflow_data.pop("unsubscribe_admins", None)
    if unsubscribe is not None:
        unsubscribe()
