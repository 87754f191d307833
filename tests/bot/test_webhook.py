"""Webhook mode: Telegram posts updates to the API's POST /telegram/webhook (the app as `waimai
api` builds it, reached over HTTP); the bot's answers still go to the fake Bot API server."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

import pytest
from aiogram.exceptions import TelegramConflictError
from pydantic import SecretStr, ValidationError
from sqlmodel import Session, select

from bot.main import BotNotConfigured, _warn_if_a_webhook_is_set, create_bot
from bot.webhook import TelegramWebhook
from core.config import TelegramSettings
from core.store.outbox import RetrainFinished
from core.store.tables import TelegramUpdate
from tests.bot.conftest import ADMIN, MERCHANT, OTHER_MERCHANT, SECRET, STRANGER, LiveWebhook
from tests.fakes.telegram_server import TOKEN, FakeTelegram

REVIEW = "送餐太慢了，菜都凉了"


def replies(server: FakeTelegram, person: dict[str, object]) -> list[str]:
    return [str(c.params["text"]) for c in server.calls_of("sendMessage", chat_id=person["id"])]


async def settle(live: LiveWebhook, person: dict[str, object]) -> None:
    """Post a fresh review as ``person`` and wait for its verdict: what was accepted before it
    has been handled by then (or never will be), give or take a short grace."""
    mark = live.server.mark()
    assert (
        await live.post(live.server.text_update(person, "味道不错，还会再点"))
    ).status_code == 200
    await live.server.wait_for(
        "sendMessage", lambda c: c.params.get("chat_id") == person["id"], after=mark
    )
    await asyncio.sleep(0.2)


async def verdict(live: LiveWebhook, person: dict[str, object]) -> None:
    await live.server.wait_for(
        "sendMessage",
        lambda c: c.params.get("chat_id") == person["id"] and c.params["text"].startswith("差评"),
    )


def taken(live: LiveWebhook) -> list[int]:
    with Session(live.core.engine) as session:
        return [row.update_id for row in session.exec(select(TelegramUpdate)).all()]


async def test_a_review_posted_to_the_webhook_gets_its_verdict(start_webhook):
    live = await start_webhook()
    update = live.server.text_update(MERCHANT, REVIEW)
    mark = live.server.mark()
    answer = await live.post(update)
    assert answer.status_code == 200
    assert answer.json() == {"status": "accepted"}
    reply = await live.server.wait_for(
        "sendMessage", lambda c: c.params.get("chat_id") == MERCHANT["id"], after=mark
    )
    assert reply.params["text"].startswith("差评 👎")
    assert reply.button(0, 0).startswith("l:")  # the label buttons, as in polling mode
    assert taken(live) == [update["update_id"]]
    assert live.server.calls_of("getUpdates") == []  # nobody polls


async def test_a_wrong_or_missing_secret_is_refused_and_nothing_happens(start_webhook):
    live = await start_webhook()
    update = live.server.text_update(MERCHANT, REVIEW)
    wrong = await live.post(update, secret=SECRET[:-1] + "x")
    missing = await live.post(update, secret=None)
    unicode = await live.http.post(
        "/telegram/webhook",
        content=b"{}",
        headers={b"x-telegram-bot-api-secret-token": "секрет".encode(), b"content-type": b"json"},
    )
    for refused in (wrong, missing, unicode):
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthenticated"
    assert "X-Telegram-Bot-Api-Secret-Token" in missing.json()["error"]["message"]
    assert taken(live) == []
    await settle(live, OTHER_MERCHANT)
    assert replies(live.server, MERCHANT) == []
    # A refused delivery does not use up the update: Telegram's own one is still handled.
    assert (await live.post(update)).json() == {"status": "accepted"}


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b"",
        b"[1, 2]",
        b"{}",
        b'{"update_id": "one"}',
        b'{"update_id": -1}',
        b'{"update_id": 99999999999999999999}',
        b'{"update_id": 7, "message": {"text": "no chat, no date"}}',
        '{"update_id": 8, "message": "\xff"}'.encode("latin-1"),
    ],
)
async def test_junk_is_a_400_never_a_500(start_webhook, body):
    live = await start_webhook()
    answer = await live.post(body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "bad_request"
    assert answer.json()["error"]["message"].startswith("not a Telegram Update")
    assert taken(live) == []


async def test_the_same_update_twice_is_handled_once(start_webhook):
    live = await start_webhook()
    update = live.server.text_update(MERCHANT, REVIEW)
    first = await live.post(update)
    again = await live.post(update)
    assert (first.status_code, again.status_code) == (200, 200)
    assert (first.json(), again.json()) == ({"status": "accepted"}, {"status": "duplicate"})
    await verdict(live, MERCHANT)
    await settle(live, MERCHANT)
    assert sorted(text[:2] for text in replies(live.server, MERCHANT)) == ["好评", "差评"]


async def test_concurrent_deliveries_of_one_update_are_handled_once(start_webhook):
    live = await start_webhook()
    update = live.server.text_update(MERCHANT, REVIEW)
    answers = await asyncio.gather(*(live.post(update) for _ in range(8)))
    assert all(a.status_code == 200 for a in answers)
    assert sorted(a.json()["status"] for a in answers) == ["accepted"] + ["duplicate"] * 7
    await verdict(live, MERCHANT)
    await settle(live, MERCHANT)
    assert sorted(text[:2] for text in replies(live.server, MERCHANT)) == ["好评", "差评"]


async def test_access_control_holds_in_webhook_mode(start_webhook):
    live = await start_webhook(access="allowlist", allowlist=[MERCHANT["id"]])
    mark = live.server.mark()
    await live.post(live.server.text_update(STRANGER, REVIEW))
    refusal = await live.server.wait_for(
        "sendMessage", lambda c: c.params.get("chat_id") == STRANGER["id"], after=mark
    )
    assert "差评" not in refusal.params["text"]


async def test_startup_subscribes_the_admins_and_shutdown_drains_and_lets_go(start_webhook):
    async with AsyncExitStack() as stack:
        live = await start_webhook(stack=stack)
        mark = live.server.mark()
        await live.core.notifications.publish(RetrainFinished(7, True, "更准了"))
        notice = await live.server.wait_for(
            "sendMessage", lambda c: c.params.get("chat_id") == ADMIN["id"], after=mark
        )
        assert "7" in notice.params["text"]
        # Leave at once: the update in flight is still answered before the session closes.
        assert (await live.post(live.server.text_update(MERCHANT, REVIEW))).status_code == 200
    assert [text[:2] for text in replies(live.server, MERCHANT)] == ["差评"]
    mark = live.server.mark()
    await live.core.notifications.publish(RetrainFinished(8, True, "更准了"))
    await asyncio.sleep(0.1)
    assert live.server.calls[mark:] == []  # unsubscribed


def test_webhook_mode_without_a_secret_refuses_to_start():
    with pytest.raises(
        ValidationError, match="TELEGRAM__MODE=webhook needs TELEGRAM__WEBHOOK_SECRET"
    ):
        TelegramSettings(token=SecretStr(TOKEN), mode="webhook")
    TelegramSettings(mode="webhook")  # no token: the bot is off, no secret needed


@pytest.mark.parametrize("secret", ["", "with space", "ümlaut", "a" * 257, "semi;colon"])
def test_the_secret_is_one_telegram_accepts(secret):
    with pytest.raises(ValidationError, match="1-256 characters of A-Z, a-z, 0-9, _ and -"):
        TelegramSettings(webhook_secret=SecretStr(secret))


def test_a_secret_at_the_limits_is_accepted():
    for secret in ("a", "A-z_0" * 51 + "9"):
        assert TelegramSettings(webhook_secret=SecretStr(secret)).webhook_secret is not None


def test_the_webhook_is_not_built_without_a_secret(make_core):
    core = make_core(mode="webhook", webhook_secret=SecretStr(SECRET))
    unchecked = core.settings.telegram.model_copy(update={"webhook_secret": None})
    core.settings = core.settings.model_copy(update={"telegram": unchecked})
    with pytest.raises(BotNotConfigured, match="TELEGRAM__WEBHOOK_SECRET is not set"):
        TelegramWebhook.create(core)


async def test_polling_is_refused_while_a_webhook_is_set_and_says_so(telegram, caplog):
    telegram.webhook = {"url": "https://example.com/telegram/webhook"}
    bot = create_bot(TelegramSettings(token=SecretStr(TOKEN), api_base=telegram.base_url))
    try:
        with pytest.raises(TelegramConflictError):
            await bot.get_updates(timeout=0)
        with caplog.at_level(logging.ERROR, logger="bot.main"):
            await _warn_if_a_webhook_is_set(bot)
    finally:
        await bot.session.close()
    assert "waimai bot delete-webhook" in caplog.text
