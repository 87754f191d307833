"""The bot in webhook mode: Telegram posts each update to the API at ``POST /telegram/webhook``.

The route checks Telegram's secret token, takes the update in the database with its JSON (so
that of several API replicas exactly one processes a retried delivery), answers 200 at once and
lets the dispatcher handle the update in a background task, through the same middlewares and
handlers as long polling. The task keeps the update alive in the database while it runs and
marks it handled when done, also when the handler failed. Telegram has its 200 and will not send
the update again, so each replica sweeps now and then (``sweep_every_s``) for updates nobody has
kept alive for ``stall_s`` (their replica died) and handles them again: at least once, twice
only when a replica died mid-way through a handler.

aiogram's ``aiogram.webhook.aiohttp_server.SimpleRequestHandler`` does the same for aiohttp;
this one is an ``APIRouter`` that cli/ mounts on the app of ``api.main.create_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from aiogram import Bot, Dispatcher
from aiogram.methods import TelegramMethod
from aiogram.types import Update, WebhookInfo
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from bot.main import BotNotConfigured, create_bot, create_dispatcher
from core.config import TelegramSettings
from core.wiring import Core

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"
TELEGRAM_HEADER = "X-Telegram-Bot-Api-Secret-Token"
"""Carries TELEGRAM__WEBHOOK_SECRET in every request Telegram makes to the webhook."""
MAX_UPDATE_ID = 2**63 - 1
DRAIN_S = 10.0
"""On shutdown, updates still being handled get this long before they are cancelled."""
STALL_S = 120.0
"""An update taken but neither handled nor kept alive (every quarter of this) for this long is
taken again by a sweep."""
SWEEP_EVERY_S = 30.0
MAX_ATTEMPTS = 3
"""An update taken this many times and still not handled is given up (and logged)."""


def webhook_secret(settings: TelegramSettings) -> str:
    """The secret Telegram must send; BotNotConfigured if there is none."""
    if settings.webhook_secret is None:
        raise BotNotConfigured(
            "TELEGRAM__WEBHOOK_SECRET is not set; webhook mode refuses to start without it"
        )
    return settings.webhook_secret.get_secret_value()


@dataclass
class TelegramWebhook:
    """One Bot and one Dispatcher for the life of the app, the route, and its lifespan."""

    core: Core
    bot: Bot
    dispatcher: Dispatcher
    secret: str
    drain_s: float = DRAIN_S
    stall_s: float = STALL_S
    sweep_every_s: float = SWEEP_EVERY_S
    max_attempts: int = MAX_ATTEMPTS
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def create(cls, core: Core) -> TelegramWebhook:
        """From the settings: BotNotConfigured without a token or a webhook secret."""
        settings = core.settings.telegram
        secret = webhook_secret(settings)
        return cls(core, create_bot(settings), create_dispatcher(core), secret)

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route(
            WEBHOOK_PATH,
            self.receive,
            methods=["POST"],
            include_in_schema=False,
            response_class=JSONResponse,
        )
        return router

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Startup as long polling does it (admins hear of retrains), then sweeps for stalled
        updates; on shutdown, the updates being handled finish (or are cancelled after
        ``drain_s``, to be handled again by a sweep) and the session closes."""
        data = {"dispatcher": self.dispatcher, "bots": [self.bot], **self.dispatcher.workflow_data}
        await self.dispatcher.emit_startup(bot=self.bot, **data)
        log.info("Telegram bot: webhook mode, updates at POST %s", WEBHOOK_PATH)
        sweeping = asyncio.create_task(self._sweep_now_and_then(), name="telegram-sweep")
        try:
            yield
        finally:
            sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeping
            await self._drain()
            try:
                await self.dispatcher.emit_shutdown(bot=self.bot, **data)
            finally:
                await self.bot.session.close()

    async def receive(self, request: Request) -> JSONResponse:
        """Refuse a missing or wrong secret (401) and anything but an Update (400: Telegram
        retries a 5xx forever); 200 once the update is taken, or when it was taken before."""
        given = request.headers.get(TELEGRAM_HEADER)
        if given is None:
            raise HTTPException(401, f"the {TELEGRAM_HEADER} header is missing")
        if not hmac.compare_digest(given.encode("latin-1"), self.secret.encode()):
            raise HTTPException(401, f"the {TELEGRAM_HEADER} header is wrong")
        body = await request.body()
        try:
            update = Update.model_validate_json(body, context={"bot": self.bot})
        except ValidationError as error:
            raise HTTPException(400, f"not a Telegram Update: {_first(error)}") from None
        if not 0 <= update.update_id <= MAX_UPDATE_ID:
            raise HTTPException(400, "not a Telegram Update: update_id is out of range")
        claimed = await self.core.telegram_updates.claim(update.update_id, body.decode())
        if not claimed:
            log.info("update %s was already taken; dropped", update.update_id)
            return JSONResponse({"status": "duplicate"})
        self._start(update)
        return JSONResponse({"status": "accepted"})

    async def sweep(self) -> int:
        """Handle again the updates that were taken (here or by another replica) but neither
        handled nor kept alive for ``stall_s``; how many this replica took."""
        updates = self.core.telegram_updates
        stalled = await updates.take_stalled(timedelta(seconds=self.stall_s), self.max_attempts)
        for each in stalled:
            try:
                update = Update.model_validate_json(each.payload, context={"bot": self.bot})
            except ValidationError:
                log.exception("stored update %s is not an Update; dropped", each.update_id)
                await updates.handled(each.update_id)
                continue
            log.warning("update %s was taken but never handled; handling it now", each.update_id)
            self._start(update)
        return len(stalled)

    async def _sweep_now_and_then(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.warning("could not sweep for stalled Telegram updates", exc_info=True)
            await asyncio.sleep(self.sweep_every_s)

    def _start(self, update: Update) -> None:
        task = asyncio.create_task(self._handle(update))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, update: Update) -> None:
        """Handle the update, keeping it alive meanwhile; then mark it handled (not when
        cancelled: a sweep handles it again)."""
        alive = asyncio.create_task(self._keep_alive(update.update_id))
        try:
            result = await self.dispatcher.feed_update(self.bot, update)
            if isinstance(result, TelegramMethod):
                await self.dispatcher.silent_call_request(self.bot, result)
        except Exception:
            log.exception("update %s failed", update.update_id)
        finally:
            alive.cancel()
        try:
            await self.core.telegram_updates.handled(update.update_id)
        except Exception:
            log.warning("could not mark update %s handled", update.update_id, exc_info=True)

    async def _keep_alive(self, update_id: int) -> None:
        while True:
            await asyncio.sleep(self.stall_s / 4)
            try:
                await self.core.telegram_updates.touch(update_id)
            except Exception:
                log.warning("could not keep update %s alive", update_id, exc_info=True)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=self.drain_s)
        for task in pending:
            log.warning("shutting down: an update was still being handled; cancelled")
            task.cancel()
        if pending:
            await asyncio.wait(pending)


async def set_webhook(core: Core, url: str, *, drop_pending_updates: bool = False) -> WebhookInfo:
    """Register ``url`` with Telegram (with the secret and the update types the dispatcher
    handles); what Telegram then says about the webhook."""
    settings = core.settings.telegram
    secret = webhook_secret(settings)
    allowed = create_dispatcher(core).resolve_used_update_types()
    bot = create_bot(settings)
    try:
        await bot.set_webhook(
            url,
            secret_token=secret,
            allowed_updates=allowed,
            drop_pending_updates=drop_pending_updates,
        )
        return await bot.get_webhook_info()
    finally:
        await bot.session.close()


async def delete_webhook(settings: TelegramSettings, *, drop_pending_updates: bool = False) -> None:
    """Remove the webhook, so that the bot can poll again."""
    bot = create_bot(settings)
    try:
        await bot.delete_webhook(drop_pending_updates=drop_pending_updates)
    finally:
        await bot.session.close()


def _first(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem.get("loc", ()))
    return f"{where}: {problem['msg']}" if where else str(problem["msg"])
