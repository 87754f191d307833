"""Handler-level cases, fed straight to the dispatcher (``Dispatcher.feed_update``); the bot's
own calls still go to the fake server."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiogram.types import Update

from bot.keyboards import ButtonSigner
from bot.main import create_bot, create_dispatcher
from tests.bot.conftest import MERCHANT
from tests.fakes.telegram_server import private_chat

REVIEW = "送餐太慢了，菜都凉了"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def feed(make_core, telegram):
    core = make_core()
    bot = create_bot(core.settings.telegram)
    dispatcher = create_dispatcher(core)
    clock = Clock()
    signer: ButtonSigner = dispatcher["buttons"]
    dispatcher["buttons"] = ButtonSigner(signer.key, signer.label_ttl_s, signer.undo_ttl_s, clock)
    update_ids = iter(range(1, 10_000))

    async def feed_update(update_id: int | None = None, **event: Any) -> None:
        update = {"update_id": update_id or next(update_ids), **event}
        await dispatcher.feed_update(bot, Update.model_validate(update, context={"bot": bot}))

    feed_update.clock = clock  # type: ignore[attr-defined]
    yield feed_update
    await bot.session.close()


def message(text: str | None = None, **content: Any) -> dict[str, Any]:
    body = {"text": text} if text is not None else {}
    return {
        "message_id": 1,
        "date": int(time.time()),
        "chat": private_chat(MERCHANT),
        "from": MERCHANT,
        **body,
        **content,
    }


def press(data: str, bot_message: dict[str, Any], press_id: str = "1") -> dict[str, Any]:
    return {
        "id": press_id,
        "from": MERCHANT,
        "chat_instance": "1",
        "message": bot_message,
        "data": data,
    }


async def test_an_update_seen_twice_is_handled_once(feed, telegram):
    await feed(update_id=42, message=message(REVIEW))
    await feed(update_id=42, message=message(REVIEW))
    assert len(telegram.calls_of("sendMessage")) == 1


async def test_stale_buttons_are_refused(feed, telegram):
    await feed(message=message(REVIEW))
    (verdict,) = telegram.calls_of("sendMessage")
    feed.clock.now += 7 * 24 * 3600 + 1
    await feed(callback_query=press(verdict.button(0, 1), verdict.result))
    (answer,) = telegram.calls_of("answerCallbackQuery")
    assert answer.params["text"] == "这个按钮已过期。"

    feed.clock.now = time.time()
    await feed(callback_query=press(verdict.button(0, 1), verdict.result))
    edited = telegram.calls_of("editMessageText")[-1]
    feed.clock.now += 10 * 60 + 1
    await feed(callback_query=press(edited.button(), edited.result))
    assert telegram.calls_of("answerCallbackQuery")[-1].params["text"] == "这个按钮已过期。"


async def test_a_press_on_an_inaccessible_message_swaps_only_the_buttons(feed, telegram):
    await feed(message=message(REVIEW))
    (verdict,) = telegram.calls_of("sendMessage")
    # Telegram sends "date": 0 for a message the bot can no longer see; aiogram parses it as an
    # InaccessibleMessage (no text to rebuild), so only the keyboard is edited.
    gone = {"message_id": verdict.result["message_id"], "date": 0, "chat": verdict.result["chat"]}
    await feed(callback_query=press(verdict.button(0, 0), gone))
    assert telegram.calls_of("editMessageText") == []
    (swapped,) = telegram.calls_of("editMessageReplyMarkup")
    assert swapped.params["reply_markup"]["inline_keyboard"][0][0]["text"] == "↩ 撤销"


async def test_what_is_not_a_review(feed, telegram):
    await feed(message=message(location={"latitude": 31.2, "longitude": 121.5}))
    await feed(message=message("/frobnicate"))
    assert [c.params["text"] for c in telegram.calls_of("sendMessage")] == [
        "请发一条文字评论，或一个 CSV、TXT 或 XLSX 文件。",
        "没有这个命令。发 /start 看看怎么用。",
    ]


async def test_a_review_too_long_is_refused_in_chinese(feed, telegram):
    await feed(message=message("难吃" * 1001))
    (reply,) = telegram.calls_of("sendMessage")
    assert reply.params["text"] == "无法处理这条评论：它是空的、太长（最多 2000 字）或不是文字。"
