"""Webhook mode behind a load balancer: replicas (each its own app, bot and engine) on one
database handle a retried update once; and the app over a real uvicorn socket."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from sqlalchemy import Engine

from bot.webhook import TELEGRAM_HEADER, WEBHOOK_PATH
from cli.bot import api_app
from core.config import TelegramSettings
from core.wiring import Core
from tests.bot.conftest import MERCHANT, SECRET, webhook_settings
from tests.conftest import make_settings
from tests.fakes.telegram_server import TOKEN, FakeTelegram
from tests.support.loopback import free_port


def replica(root: Path, db_url: str, telegram: FakeTelegram) -> Core:
    settings = make_settings(root, db_url)
    bot = TelegramSettings(
        **webhook_settings(token=SecretStr(TOKEN), api_base=telegram.base_url, access="open")
    )
    return Core(settings.model_copy(update={"telegram": bot}))


@pytest.fixture
async def replicas(
    tmp_path: Path, db_url: str, engine: Engine, telegram: FakeTelegram
) -> AsyncIterator[list[Core]]:
    """Three cores on one migrated database (SQLite file or PostgreSQL), as three processes."""
    cores = [replica(tmp_path / f"r{n}", db_url, telegram) for n in range(3)]
    yield cores
    for core in cores:
        core.engine.dispose()


async def test_replicas_on_one_database_handle_a_retried_update_once(
    replicas: list[Core], telegram: FakeTelegram, start_webhook
):
    apps = [await start_webhook(core) for core in replicas]
    update = telegram.text_update(MERCHANT, "/start")
    # Telegram retries the same update; the load balancer spreads the retries over replicas.
    answers = await asyncio.gather(*(app.post(update) for app in apps for _ in range(3)))
    assert [a.status_code for a in answers] == [200] * 9
    assert sorted(a.json()["status"] for a in answers) == ["accepted"] + ["duplicate"] * 8
    later = telegram.text_update(MERCHANT, "/help")
    assert (await apps[1].post(later)).json() == {"status": "accepted"}
    await telegram.wait_for(
        "sendMessage", lambda _: len(telegram.calls_of("sendMessage", chat_id=MERCHANT["id"])) > 1
    )
    await asyncio.sleep(0.3)
    greetings = telegram.calls_of("sendMessage", chat_id=MERCHANT["id"])
    assert len(greetings) == 2  # one for /start, one for /help
    assert all("你好" in c.params["text"] for c in greetings)


async def test_the_webhook_over_a_real_uvicorn_socket(make_core, telegram: FakeTelegram):
    core = make_core(**webhook_settings())
    port = free_port()
    config = uvicorn.Config(
        api_app(core), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        await asyncio.sleep(0.05)
    try:
        update = telegram.text_update(MERCHANT, "味道不错，分量足，还会再点")
        mark = telegram.mark()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            headers = {TELEGRAM_HEADER: SECRET}
            answer = await http.post(WEBHOOK_PATH, json=update, headers=headers)
            again = await http.post(WEBHOOK_PATH, json=update, headers=headers)
            refused = await http.post(WEBHOOK_PATH, json=update)
            junk = await http.post(WEBHOOK_PATH, content=b"{", headers=headers)
        assert (answer.status_code, answer.json()) == (200, {"status": "accepted"})
        assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
        assert refused.status_code == 401
        assert junk.status_code == 400
        reply = await telegram.wait_for(
            "sendMessage", lambda c: c.params.get("chat_id") == MERCHANT["id"], after=mark
        )
        assert reply.params["text"].startswith("好评 👍")
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()
    await asyncio.sleep(0.2)
    assert len(telegram.calls_of("sendMessage", chat_id=MERCHANT["id"])) == 1
