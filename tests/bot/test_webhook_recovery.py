"""Webhook mode: an update answered 200 but never handled (its replica died after the claim) is
handled by another replica's sweep, once, however many replicas sweep; a handled one (also one
whose handler failed, or took long) never again; one that kills every handler is given up."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiogram import Bot
from aiogram.types import Update
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session

from api.main import create_app
from bot.webhook import TelegramWebhook
from core.config import TelegramSettings
from core.store.tables import TelegramUpdate
from core.wiring import Core
from tests.bot.conftest import MERCHANT, LiveWebhook, webhook_settings
from tests.conftest import make_settings
from tests.fakes.telegram_server import TOKEN, Call, FakeTelegram, user

REVIEW = "送餐太慢了，菜都凉了"
STALL_S = 0.5


@dataclass
class Sweeping(LiveWebhook):
    webhook: TelegramWebhook


@pytest.fixture
async def start_sweeping(
    telegram: FakeTelegram, make_core: Callable[..., Core]
) -> AsyncIterator[Callable[..., Awaitable[Sweeping]]]:
    """Webhook apps that sweep every 50 ms for updates stalled for STALL_S (``tuning`` changes
    other fields of their TelegramWebhook), on a new core (make_core's settings) unless given."""
    async with AsyncExitStack() as stack:

        async def start(core: Core | None = None, **tuning: Any) -> Sweeping:
            core = core or make_core(**webhook_settings())
            fields = {"stall_s": STALL_S, "sweep_every_s": 0.05} | tuning
            webhook = replace(TelegramWebhook.create(core), **fields)
            app = create_app(core, routers=[webhook.router()], lifespans=[webhook.lifespan])
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            http = httpx.AsyncClient(transport=transport, base_url="http://api.test")
            await stack.enter_async_context(http)
            return Sweeping(telegram, core, app, http, webhook)

        yield start


async def taken_and_left(core: Core, update: dict[str, Any]) -> None:
    """A replica takes ``update`` (Telegram has its 200) and dies before handling it."""
    assert await core.telegram_updates.claim(update["update_id"], json.dumps(update))


def stored(engine: Engine, update: dict[str, Any]) -> TelegramUpdate:
    with Session(engine) as session:
        row = session.get(TelegramUpdate, update["update_id"])
    assert row is not None
    return row


def replies(server: FakeTelegram, person: dict[str, Any]) -> list[str]:
    return [str(c.params["text"]) for c in server.calls_of("sendMessage", chat_id=person["id"])]


def to(person: dict[str, Any]) -> Callable[[Call], bool]:
    return lambda call: call.params.get("chat_id") == person["id"]


async def eventually(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_an_update_whose_replica_died_is_handled_by_another_replicas_sweep(
    start_sweeping: Callable[..., Awaitable[Sweeping]],
    make_core: Callable[..., Core],
    telegram: FakeTelegram,
):
    update = telegram.text_update(MERCHANT, REVIEW)
    await taken_and_left(make_core(**webhook_settings()), update)
    live = await start_sweeping()
    reply = await telegram.wait_for("sendMessage", to(MERCHANT))
    assert reply.params["text"].startswith("差评 👎")
    assert reply.button(0, 0).startswith("l:")
    await asyncio.sleep(STALL_S * 3)
    assert len(replies(telegram, MERCHANT)) == 1
    row = stored(live.core.engine, update)
    assert (row.attempts, row.handled_at is not None) == (2, True)


def replica(root: Path, db_url: str, telegram: FakeTelegram) -> Core:
    settings = make_settings(root, db_url)
    bot = TelegramSettings(
        **webhook_settings(token=SecretStr(TOKEN), api_base=telegram.base_url, access="open")
    )
    return Core(settings.model_copy(update={"telegram": bot}))


async def test_replicas_sweeping_at_once_handle_each_stalled_update_once(
    start_sweeping: Callable[..., Awaitable[Sweeping]],
    telegram: FakeTelegram,
    tmp_path: Path,
    db_url: str,
    engine: Engine,
):
    """Three replicas on one database (SQLite file or PostgreSQL) start together after a
    fourth died with six updates taken."""
    cores = [replica(tmp_path / f"r{n}", db_url, telegram) for n in range(4)]
    people = [user(4000 + n) for n in range(6)]
    try:
        for person in people:
            await taken_and_left(cores[0], telegram.text_update(person, "/start"))
        await asyncio.gather(*(start_sweeping(core) for core in cores[1:]))
        for person in people:
            await telegram.wait_for("sendMessage", to(person))
        await asyncio.sleep(STALL_S * 3)
    finally:
        for core in cores:
            core.engine.dispose()
    for person in people:
        (greeting,) = replies(telegram, person)
        assert "你好" in greeting


async def test_a_handled_update_is_not_handled_again(
    start_sweeping: Callable[..., Awaitable[Sweeping]], telegram: FakeTelegram
):
    live, other = await start_sweeping(), await start_sweeping()
    update = telegram.text_update(MERCHANT, REVIEW)
    assert (await live.post(update)).json() == {"status": "accepted"}
    await eventually(lambda: stored(live.core.engine, update).handled_at is not None)
    await asyncio.sleep(STALL_S * 3)
    assert len(replies(telegram, MERCHANT)) == 1
    assert stored(other.core.engine, update).attempts == 1


async def test_an_update_whose_handler_failed_counts_as_handled(
    start_sweeping: Callable[..., Awaitable[Sweeping]],
    telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    live = await start_sweeping()
    fed: list[int] = []

    async def broken(bot: Bot, update: Update, **kwargs: Any) -> Any:
        fed.append(update.update_id)
        raise RuntimeError("a bug in a handler")

    monkeypatch.setattr(live.webhook.dispatcher, "feed_update", broken)
    update = telegram.text_update(MERCHANT, REVIEW)
    assert (await live.post(update)).status_code == 200
    await eventually(lambda: stored(live.core.engine, update).handled_at is not None)
    await asyncio.sleep(STALL_S * 3)
    assert fed == [update["update_id"]]
    assert f"update {update['update_id']} failed" in caplog.text


async def test_a_slow_handler_keeps_its_update_from_the_sweepers(
    start_sweeping: Callable[..., Awaitable[Sweeping]],
    telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
):
    stall_s = 1.0  # kept alive every 0.25 s, however busy the machine
    slow, sweeper = await start_sweeping(stall_s=stall_s), await start_sweeping(stall_s=stall_s)
    feed = slow.webhook.dispatcher.feed_update

    async def takes_long(bot: Bot, update: Update, **kwargs: Any) -> Any:
        await asyncio.sleep(stall_s * 2.5)
        return await feed(bot, update, **kwargs)

    monkeypatch.setattr(slow.webhook.dispatcher, "feed_update", takes_long)
    update = telegram.text_update(MERCHANT, REVIEW)
    assert (await slow.post(update)).status_code == 200
    await eventually(lambda: stored(sweeper.core.engine, update).handled_at is not None)
    await asyncio.sleep(stall_s)
    assert len(replies(telegram, MERCHANT)) == 1
    assert stored(sweeper.core.engine, update).attempts == 1


async def test_an_update_that_kills_its_handler_is_given_up_after_three_tries(
    start_sweeping: Callable[..., Awaitable[Sweeping]],
    telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    live = await start_sweeping(max_attempts=3)
    fed: list[int] = []

    async def dies(bot: Bot, update: Update, **kwargs: Any) -> Any:
        fed.append(update.update_id)
        raise asyncio.CancelledError  # as when the replica is killed mid-way

    monkeypatch.setattr(live.webhook.dispatcher, "feed_update", dies)
    update = telegram.text_update(MERCHANT, REVIEW)
    with caplog.at_level(logging.ERROR, logger="core.delivery.telegram_updates"):
        assert (await live.post(update)).status_code == 200
        await eventually(lambda: stored(live.core.engine, update).handled_at is not None)
    await asyncio.sleep(STALL_S * 3)
    assert fed == [update["update_id"]] * 3
    assert f"update {update['update_id']} was taken 3 times and never handled" in caplog.text
    assert replies(telegram, MERCHANT) == []
