"""Scenarios: what makes the bot feel like a Telegram bot. Its "/" menu and descriptions in
Chinese and English, the typing and upload indicators, Excel files, the /model report within
Telegram's caption limit, and admin notices in each admin's language."""

from __future__ import annotations

import io
import logging
import re

from openpyxl import Workbook, load_workbook  # type: ignore[import-untyped]

from core.models import registry
from core.store.outbox import BackendAlert, DriftNotice, RetrainFinished
from tests.bot.conftest import ADMIN, ENGLISH, MERCHANT
from tests.fakes.telegram_server import Call, FakeTelegram, user

ENGLISH_ADMIN = user(1001, language_code="en-US", first_name="Ann")
SILENT_ADMIN = user(1002, first_name="老板")
"""An admin who never wrote to the bot: the store knows no language for them."""
MENU = ["start", "help", "stats", "queue"]
HAN = re.compile(r"[\u4e00-\u9fff]")


async def introduced(server: FakeTelegram, admins: list[int]) -> None:
    """Wait until the bot has set everything it sets at startup."""
    wanted = {(admin, code) for admin in admins for code in (None, "zh")}

    def all_set(call: Call) -> bool:
        made = {
            (c.params.get("scope", {}).get("chat_id"), c.params.get("language_code"))
            for c in server.calls_of("setMyCommands")
            if c.status == 200
        }
        return wanted <= made

    await server.wait_for("setMyCommands", all_set)


def assert_introduced(server: FakeTelegram, admins: list[int]) -> None:
    assert server.menu("") == MENU and server.menu("zh") == MENU
    for admin in admins:
        assert server.menu("", admin) == [*MENU, "model", "retrain"]
        assert server.menu("zh", admin) == [*MENU, "model", "retrain"]
    zh = [server.commands[key] for key in server.commands if key[1] == "zh"]
    en = [server.commands[key] for key in server.commands if key[1] == ""]
    assert all(HAN.search(c["description"]) for menu in zh for c in menu)
    assert all(c["description"].isascii() for menu in en for c in menu)
    for kind in ("description", "short_description"):
        assert HAN.search(server.descriptions[(kind, "zh")])
        assert server.descriptions[(kind, "")].startswith(("I classify", "Classifies"))


async def test_the_menu_and_descriptions_are_set_in_both_languages_when_polling(start_bot):
    live = await start_bot(admins=[ADMIN["id"], ENGLISH_ADMIN["id"]])
    await introduced(live.server, [ADMIN["id"], ENGLISH_ADMIN["id"]])
    assert_introduced(live.server, [ADMIN["id"], ENGLISH_ADMIN["id"]])


async def test_the_menu_and_descriptions_are_set_in_both_languages_in_webhook_mode(
    start_webhook, telegram
):
    await start_webhook()
    await introduced(telegram, [ADMIN["id"]])
    assert_introduced(telegram, [ADMIN["id"]])


async def test_a_menu_telegram_is_too_busy_for_is_set_later_and_the_bot_works_meanwhile(
    start_bot, telegram, caplog
):
    # Flood control twice: the session waits out the first, the introduction the second.
    telegram.fail_next("setMyCommands", retry_after=1)
    telegram.fail_next("setMyCommands", retry_after=1)
    with caplog.at_level(logging.WARNING, logger="bot.introduction"):
        live = await start_bot()
        assert (await live.say(MERCHANT, "送餐太慢了，菜都凉了")).params["text"].startswith("差评")
        await introduced(telegram, [ADMIN["id"]])
    assert [c.status for c in telegram.calls_of("setMyCommands")][:3] == [429, 429, 200]
    assert "the bot's menu is not set yet" in caplog.text
    assert_introduced(telegram, [ADMIN["id"]])


async def test_typing_shows_while_a_review_is_classified(start_bot):
    live = await start_bot()
    verdict = await live.say(MERCHANT, "送餐太慢了，菜都凉了")
    typing = live.server.calls_of("sendChatAction", chat_id=MERCHANT["id"])[0]
    assert typing.params["action"] == "typing"
    assert typing.at <= verdict.at, "shown before the answer, never after it"


async def test_an_excel_file_gets_its_results_as_an_excel_file(start_bot):
    live = await start_bot()
    book = Workbook()
    sheet = book.active
    sheet.append(["订单号", "评论"])
    sheet.append([1001, "送餐太慢了，菜都凉了"])
    sheet.append([1002, "味道不错，分量足，还会再点"])
    upload = io.BytesIO()
    book.save(upload)
    mark = live.server.mark()
    xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    await live.server.send_document(MERCHANT, "本周.xlsx", upload.getvalue(), xlsx)

    sent = await live.next("sendDocument", MERCHANT["id"], after=mark)
    assert sent.result["document"]["file_name"] == "本周_results.xlsx"
    assert sent.params["caption"].startswith("完成：2 条评论，好评 1 条，差评 1 条，好评率 50%。")
    _, content = live.server.files[sent.result["document"]["file_id"]]
    results = load_workbook(io.BytesIO(content)).active
    rows = [[cell.value for cell in row] for row in results.iter_rows()]
    assert rows[0] == ["review", "label", "label_zh", "confidence"]
    assert [row[:3] for row in rows[1:]] == [
        ["送餐太慢了，菜都凉了", "negative", "差评"],
        ["味道不错，分量足，还会再点", "positive", "好评"],
    ]
    uploading = live.server.calls_of("sendChatAction", action="upload_document")[0]
    assert uploading.at <= sent.at


async def test_a_long_model_caption_is_cut_to_telegrams_limit(start_bot):
    live = await start_bot()
    ref = "ft:glm-4-flash:" + "x" * 1100
    version = registry.register(live.core.engine, backend="local", model_ref=ref, metrics={})
    registry.promote(live.core.engine, version.id or 0)
    mark = live.server.mark()
    await live.server.send_text(ADMIN, "/model")
    report = await live.next("sendPhoto", ADMIN["id"], after=mark)
    assert report.status == 200
    assert len(report.params["caption"]) == 1024
    assert report.params["caption"].startswith(f"当前模型 #{version.id}（local：ft:glm-4-flash:xxx")
    assert report.params["caption"].endswith("…")


async def test_admins_are_told_in_their_own_language(start_bot):
    admins = [ADMIN["id"], ENGLISH_ADMIN["id"], SILENT_ADMIN["id"]]
    live = await start_bot(admins=admins, notify_poll_s=0.05)
    assert (await live.say(ENGLISH_ADMIN, "/help")).params["text"].startswith("Hi!")
    assert (await live.say(ENGLISH, "/help")).params["text"].startswith("Hi!")

    mark = live.server.mark()
    await live.core.notifications.publish(
        RetrainFinished(7, promoted=False, reason="留出集准确率 0.901 低于当前的 0.909。")
    )
    zh, en, silent = [await live.next("sendMessage", a, after=mark) for a in admins]
    assert (
        zh.params["text"] == "重训完成：候选模型 #7 未上线。留出集准确率 0.901 低于当前的 0.909。"
    )
    assert en.params["text"] == (
        "Retrain finished: candidate #7 was rejected. 留出集准确率 0.901 低于当前的 0.909。"
    )
    assert silent.params["text"] == zh.params["text"], "Chinese when the language is unknown"
    told = {c.params["chat_id"] for c in live.server.calls[mark:] if c.method == "sendMessage"}
    assert told == set(admins), "merchants are not told"

    mark = live.server.mark()
    await live.core.notifications.publish(BackendAlert("zhipu", "quota used up"))
    alert = await live.next("sendMessage", ENGLISH_ADMIN["id"], after=mark)
    assert alert.params["text"] == (
        "⚠️ The zhipu model cannot answer for now; the fallback answers meanwhile. quota used up"
    )

    mark = live.server.mark()
    await live.core.notifications.publish(
        DriftNotice("correction_rate", "telegram:42", 0.4512, 0.3, 80, 24.0)
    )
    zh_drift, en_drift = [await live.next("sendMessage", a, after=mark) for a in admins[:2]]
    assert en_drift.params["text"].startswith(
        "📈 Merchant telegram:42 corrected 45% of the model's verdicts in 80 labels over the "
        "last 24 hours (the threshold is 30%)."
    )
    assert zh_drift.params["text"].startswith("📈 商家 telegram:42 最近 24 小时的 80 条标注中，45%")
