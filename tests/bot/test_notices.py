"""Admins hear of a retrain that the worker finished in another process (its own Core, as in
Compose): through the database, from the polling bot or from one of several webhook replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from core.store.outbox import BackendAlert, RetrainFinished
from core.wiring import Core
from tests.bot.conftest import ADMIN, LiveBot, LiveWebhook
from tests.fakes.telegram_server import FakeTelegram

REJECTED = RetrainFinished(7, promoted=False, reason="留出集准确率 0.901 低于当前的 0.909。")
NOTICE = "重训完成：候选模型 #7 未上线。留出集准确率 0.901 低于当前的 0.909。"


def notices(server: FakeTelegram) -> list[str]:
    return [
        str(c.params["text"])
        for c in server.calls_of("sendMessage", chat_id=ADMIN["id"])
        if c.status == 200
    ]


async def test_the_polling_bot_tells_the_admins_of_a_retrain_the_worker_finished(
    start_bot: Callable[..., Awaitable[LiveBot]], make_core: Callable[..., Core]
):
    live = await start_bot(notify_poll_s=0.05)
    worker = make_core()
    mark = live.server.mark()
    await worker.notifications.publish(REJECTED)
    notice = await live.next("sendMessage", ADMIN["id"], after=mark)
    assert notice.params["text"] == NOTICE


async def test_of_several_webhook_replicas_one_tells_the_admins(
    start_webhook: Callable[..., Awaitable[LiveWebhook]],
    make_core: Callable[..., Core],
    telegram: FakeTelegram,
):
    for _ in range(3):
        await start_webhook(notify_poll_s=0.05)
    worker = make_core()
    await worker.notifications.publish(REJECTED)
    await telegram.wait_for("sendMessage", lambda c: c.params.get("chat_id") == ADMIN["id"])
    await asyncio.sleep(0.5)  # ten polls of each replica
    assert notices(telegram) == [NOTICE]


async def test_a_notice_telegram_did_not_take_is_sent_again(
    start_bot: Callable[..., Awaitable[LiveBot]], make_core: Callable[..., Core]
):
    live = await start_bot(notify_poll_s=0.05)
    live.core.notifications.claim_timeout = timedelta(seconds=0.5)
    live.server.fail_next("sendMessage", retry_after=3600)  # flood control: too long to wait
    await make_core().notifications.publish(REJECTED)
    await live.server.wait_for(
        "sendMessage", lambda c: c.params.get("chat_id") == ADMIN["id"] and c.status == 200
    )
    calls = live.server.calls_of("sendMessage", chat_id=ADMIN["id"])
    assert [c.status for c in calls] == [429, 200]
    assert notices(live.server) == [NOTICE]


async def test_the_admins_hear_of_a_backend_that_cannot_answer(
    start_bot: Callable[..., Awaitable[LiveBot]], make_core: Callable[..., Core]
):
    live = await start_bot(notify_poll_s=0.05)
    mark = live.server.mark()
    quota = "zhipu:glm-4-flash cannot answer: Zhipu answered 429 (code 1308: ...)."
    await make_core().notifications.publish(BackendAlert("zhipu", quota))
    notice = await live.next("sendMessage", ADMIN["id"], after=mark)
    assert notice.params["text"] == f"⚠️ zhipu 模型暂时无法使用，评论改由备用模型判断。{quota}"
