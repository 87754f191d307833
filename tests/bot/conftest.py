"""A real aiogram Bot, long polling the fake Bot API server, on a core with a trained model;
or in webhook mode, behind the API app, with the test posting the updates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiogram import Bot, Dispatcher
from fastapi import FastAPI
from pydantic import SecretStr

from bot.main import create_bot, create_dispatcher
from bot.webhook import TELEGRAM_HEADER, WEBHOOK_PATH
from cli.bot import api_app
from core.config import TelegramSettings
from core.wiring import Core
from tests.fakes.telegram_server import TOKEN, Call, FakeTelegram, group_chat, user

ADMIN = user(1000, first_name="店长")
MERCHANT = user(2001)
OTHER_MERCHANT = user(2002)
ENGLISH = user(2003, language_code="en-GB", first_name="Ann")
STRANGER = user(3001, first_name="路人")
SECRET = "webhook-Secret_for_the-tests_0123456789"


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def make_core(core: Core, telegram: FakeTelegram) -> Iterator[Callable[..., Core]]:
    """Cores on the test's store with Telegram settings: open access and ADMIN unless told."""
    made: list[Core] = []

    def make(
        *,
        db_busy_timeout_ms: int | None = None,
        fallbacks: list[str] | None = None,
        **telegram_settings: Any,
    ) -> Core:
        settings = {
            "token": SecretStr(TOKEN),
            "api_base": telegram.base_url,
            "access": "open",
            "admins": [ADMIN["id"]],
            "polling_timeout_s": 1,
            "progress_interval_s": 0,
        } | telegram_settings
        update: dict[str, Any] = {"telegram": TelegramSettings(**settings)}
        if db_busy_timeout_ms is not None:
            update["db"] = core.settings.db.model_copy(
                update={"busy_timeout_ms": db_busy_timeout_ms}
            )
        if fallbacks is not None:
            update["serving"] = core.settings.serving.model_copy(update={"fallbacks": fallbacks})
        made.append(Core(core.settings.model_copy(update=update)))
        return made[-1]

    yield make
    for each in made:
        each.engine.dispose()


@dataclass
class LiveBot:
    """The bot polling the fake server, and the conversation helpers the scenarios use."""

    server: FakeTelegram
    core: Core
    bot: Bot
    dispatcher: Dispatcher
    polling: asyncio.Task[None]

    async def say(self, person: dict[str, Any], text: str, chat_id: int | None = None) -> Call:
        """Send ``text`` as ``person``; the bot's next message in that chat."""
        chat_id = person["id"] if chat_id is None else chat_id
        mark = self.server.mark()
        chat = None if chat_id == person["id"] else group_chat(chat_id)
        await self.server.send_text(person, text, chat)
        return await self.next("sendMessage", chat_id, after=mark)

    async def press(self, person: dict[str, Any], reply: Call, data: str) -> Call:
        """Press a button (``data``) under the bot's message ``reply``; the callback answer."""
        mark = self.server.mark()
        await self.server.press(person, reply.result, data)
        return await self.server.wait_for("answerCallbackQuery", after=mark)

    async def next(self, method: str, chat_id: int, *, after: int) -> Call:
        return await self.server.wait_for(
            method, lambda c: c.params.get("chat_id") == chat_id, after=after
        )

    async def collect(self, method: str, chat_id: int, count: int, *, after: int) -> list[Call]:
        """The next ``count`` calls of ``method`` to ``chat_id`` after the mark ``after``."""
        found: list[Call] = []
        while len(found) < count:
            found.append(await self.next(method, chat_id, after=after))
            after = next(i for i, c in enumerate(self.server.calls) if c is found[-1]) + 1
        return found


@pytest.fixture
async def start_bot(
    telegram: FakeTelegram, make_core: Callable[..., Core]
) -> AsyncIterator[Callable[..., Awaitable[LiveBot]]]:
    running: list[LiveBot] = []

    async def start(**telegram_settings: Any) -> LiveBot:
        core = make_core(**telegram_settings)
        bot = create_bot(core.settings.telegram)
        dispatcher = create_dispatcher(core)
        mark = telegram.mark()
        polling = asyncio.create_task(
            dispatcher.start_polling(bot, polling_timeout=1, handle_signals=False)
        )
        running.append(LiveBot(telegram, core, bot, dispatcher, polling))
        await telegram.wait_for("getMe", after=mark)
        return running[-1]

    yield start
    for live in running:
        if not live.polling.done():
            await live.dispatcher.stop_polling()
        await live.polling


@dataclass
class LiveWebhook:
    """The API app in webhook mode (lifespan entered), reached through httpx."""

    server: FakeTelegram
    core: Core
    app: FastAPI
    http: httpx.AsyncClient

    async def post(
        self, update: dict[str, Any] | bytes, secret: str | None = SECRET
    ) -> httpx.Response:
        """POST an update (or raw bytes) to the webhook, as Telegram does."""
        body = update if isinstance(update, bytes) else json.dumps(update).encode()
        headers = {"content-type": "application/json"}
        if secret is not None:
            headers[TELEGRAM_HEADER] = secret
        return await self.http.post(WEBHOOK_PATH, content=body, headers=headers)


def webhook_settings(**telegram_settings: Any) -> dict[str, Any]:
    return {"mode": "webhook", "webhook_secret": SecretStr(SECRET)} | telegram_settings


@pytest.fixture
async def start_webhook(
    telegram: FakeTelegram, make_core: Callable[..., Core]
) -> AsyncIterator[Callable[..., Awaitable[LiveWebhook]]]:
    """Apps as `waimai api` builds them in webhook mode: on a new core (make_core's settings)
    unless one is given. Each app's lifespan ends (and its bot session closes) after the test,
    or when the test leaves the stack it passes."""
    async with AsyncExitStack() as stack:

        async def start(
            core: Core | None = None, stack: AsyncExitStack = stack, **telegram_settings: Any
        ) -> LiveWebhook:
            core = core or make_core(**webhook_settings(**telegram_settings))
            app = api_app(core)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            http = httpx.AsyncClient(transport=transport, base_url="http://api.test")
            await stack.enter_async_context(http)
            return LiveWebhook(telegram, core, app, http)

        yield start
