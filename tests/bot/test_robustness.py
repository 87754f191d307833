"""Scenarios: Telegram's 429, a failing backend, an unexpected error; admin commands and the
retrain notice. (The throttle: test_throttle.py.)"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3

from sqlmodel import Session, col, select

from bot.main import run
from core.models import registry
from core.store.outbox import RetrainFinished
from core.store.tables import Prediction, RetrainRequest, Review
from tests.bot.conftest import ADMIN, MERCHANT
from tests.fakes.telegram_server import FakeTelegram

REVIEW = "送餐太慢了，菜都凉了"


def reviews_of(core, person) -> int:
    with Session(core.engine) as session:
        tenant = f"telegram:{person['id']}"
        return len(session.exec(select(Review).where(col(Review.tenant) == tenant)).all())


async def test_a_429_is_waited_out_and_the_send_retried(start_bot):
    live = await start_bot()
    live.server.fail_next("sendMessage", retry_after=1)
    mark = live.server.mark()
    await live.server.send_text(MERCHANT, REVIEW)
    refused, sent = await live.collect("sendMessage", MERCHANT["id"], 2, after=mark)
    assert sent.params["text"].startswith("差评 👎")
    assert sent.status == 200
    assert refused.status == 429
    assert sent.at - refused.at >= 1.0


async def test_a_failing_backend_falls_back_and_says_so(start_bot):
    live = await start_bot()
    broken = registry.register(
        live.core.engine, backend="local", model_ref="missing-artifact", metrics={}
    )
    assert broken.id is not None
    registry.promote(live.core.engine, broken.id)

    reply = await live.say(MERCHANT, REVIEW)
    assert reply.params["text"].startswith("差评 👎 置信度 ")
    assert reply.params["text"].endswith("（备用模型）")
    with Session(live.core.engine) as session:
        prediction = session.exec(select(Prediction).order_by(col(Prediction.id).desc())).first()
    assert prediction is not None
    assert prediction.fallback
    assert prediction.model_version_id != broken.id


async def test_an_unexpected_error_gets_an_apology_and_polling_goes_on(start_bot, caplog):
    live = await start_bot(db_busy_timeout_ms=50)
    assert (await live.say(MERCHANT, REVIEW)).params["text"].startswith("差评")
    # Another process holds the store's write lock: storing the next review fails.
    locker = sqlite3.connect(live.core.engine.url.database, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.ERROR, logger="bot.middlewares"):
            mark = live.server.mark()
            message = await live.server.send_text(MERCHANT, "还会再点")
            apology = await live.next("sendMessage", MERCHANT["id"], after=mark)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert apology.params["text"] == "抱歉，出了点问题，我们已记录。请稍后再试。"
    failed = [r for r in caplog.records if r.getMessage().endswith(" failed")]
    assert failed
    assert "database is locked" in str(failed[0].exc_info[1])
    assert message["message_id"] > 0
    assert (await live.say(MERCHANT, "还会再点")).params["text"].startswith("好评")


async def test_admin_commands(start_bot):
    live = await start_bot()
    model = registry.active(live.core.engine)
    mark = live.server.mark()
    await live.server.send_text(ADMIN, "/model")
    report = await live.next("sendPhoto", ADMIN["id"], after=mark)
    caption = report.params["caption"]
    assert caption.startswith(f"当前模型 #{model.id}（local：{model.model_ref}），")
    assert f"准确率 {model.metrics['accuracy']:.4f}" in caption
    (picture,) = report.result["photo"]
    assert (picture["width"], picture["height"]) == (1200, 900)
    _, content = live.server.files[picture["file_id"]]
    assert content == await live.core.reports.png(model.id), "the active version's report"
    uploading = live.server.calls_of("sendChatAction", chat_id=ADMIN["id"], action="upload_photo")
    assert uploading and uploading[0].at <= report.at

    assert (await live.say(MERCHANT, "/model")).params["text"] == "这个命令只对管理员开放。"
    assert (await live.say(MERCHANT, "/retrain")).params["text"] == "这个命令只对管理员开放。"

    first = (await live.say(ADMIN, "/retrain")).params["text"]
    assert first.startswith("已记录重训请求 #1。调度器还没有上线")
    again = (await live.say(ADMIN, "/retrain")).params["text"]
    assert again == "已有一个待处理的重训请求 #1（telegram:1000 提出），没有重复记录。"
    with Session(live.core.engine) as session:
        (request,) = session.exec(select(RetrainRequest)).all()
    assert (request.requested_by, request.handled_at) == ("telegram:1000", None)


async def test_admins_hear_when_a_retrain_finishes(start_bot):
    live = await start_bot()
    mark = live.server.mark()
    await live.core.notifications.publish(
        RetrainFinished(7, promoted=False, reason="留出集准确率 0.901 低于当前的 0.909。")
    )
    notice = await live.next("sendMessage", ADMIN["id"], after=mark)
    assert (
        notice.params["text"]
        == "重训完成：候选模型 #7 未上线。留出集准确率 0.901 低于当前的 0.909。"
    )
    assert live.server.calls_of("sendMessage", chat_id=MERCHANT["id"]) == []


async def test_telegram_out_of_reach_at_the_start_is_waited_for(make_core, caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    core = make_core(api_base=f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING, logger="bot.main"):
        polling = asyncio.create_task(run(core, handle_signals=False))
        while "Telegram is out of reach" not in caplog.text:
            await asyncio.sleep(0.05)
    late = FakeTelegram()
    await late.start(port)
    try:
        verdict = await asyncio.wait_for(_first_verdict(late), 10)
        assert verdict.startswith("差评")
    finally:
        polling.cancel()
        await asyncio.gather(polling, return_exceptions=True)
        await late.close()


async def _first_verdict(server: FakeTelegram) -> str:
    await server.send_text(MERCHANT, REVIEW)
    return str((await server.wait_for("sendMessage")).params["text"])
