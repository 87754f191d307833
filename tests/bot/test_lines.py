"""Scenarios: a message of several lines. The bot asks first; each line can be a review of its
own (a verdict for each, or a results file for many), or the whole message one."""

from __future__ import annotations

import csv
import io

from sqlmodel import Session, col, select

from core.store.tables import Review
from tests.bot.conftest import MERCHANT

LINES = ["送餐太慢了，菜都凉了", "味道不错，分量足，还会再点", "太难吃了，再也不点了"]
PASTED = "\n".join([LINES[0], "", f"  {LINES[1]}  ", LINES[2]])


def stored(core) -> list[Review]:
    with Session(core.engine) as session:
        tenant = col(Review.tenant) == f"telegram:{MERCHANT['id']}"
        return list(session.exec(select(Review).where(tenant).order_by(col(Review.id))).all())


async def offer_for(live, text: str):
    mark = live.server.mark()
    message = await live.server.send_text(MERCHANT, text)
    offer = await live.next("sendMessage", MERCHANT["id"], after=mark)
    return message, offer


async def test_a_message_of_several_lines_offers_a_verdict_for_each(start_bot):
    live = await start_bot()
    message, offer = await offer_for(live, PASTED)
    assert offer.params["text"] == "这条消息有 3 行。要把每一行当作一条评论分别判断吗？"
    assert offer.result["reply_to_message"]["message_id"] == message["message_id"]
    keyboard = offer.params["reply_markup"]["inline_keyboard"]
    assert [row[0]["text"] for row in keyboard] == ["📋 逐行判断（3 条）", "整条算一条评论"]
    assert stored(live.core) == [], "nothing is classified before the merchant chooses"

    mark = live.server.mark()
    answer = await live.press(MERCHANT, offer, offer.button(0, 0))
    assert answer.params.get("text") is None
    verdicts = await live.collect("sendMessage", MERCHANT["id"], 3, after=mark)
    assert [v.params["text"].splitlines()[0] for v in verdicts] == [
        f"{n}. 「{line}」" for n, line in enumerate(LINES, 1)
    ]
    assert [v.params["text"].splitlines()[1][:2] for v in verdicts] == ["差评", "好评", "差评"]
    assert all(
        v.result["reply_to_message"]["message_id"] == message["message_id"] for v in verdicts
    )
    (edited,) = live.server.calls_of("editMessageText", message_id=offer.result["message_id"])
    assert edited.params["text"] == "逐行判断这 3 条："
    assert "reply_markup" not in live.server.messages[(MERCHANT["id"], offer.result["message_id"])]
    reviews = stored(live.core)
    assert [r.text for r in reviews] == LINES
    assert [r.external_id for r in reviews] == [
        f"telegram:{MERCHANT['id']}:{message['message_id']}:{n}" for n in (1, 2, 3)
    ]

    # Each line's verdict is corrected like any other.
    second = verdicts[1]
    mark = live.server.mark()
    await live.press(MERCHANT, second, second.button(0, 1))
    corrected = await live.next("editMessageText", MERCHANT["id"], after=mark)
    assert corrected.params["text"].startswith(f"2. 「{LINES[1]}」\n好评 👍")
    assert "✏️ 已更正为：差评" in corrected.params["text"]

    # The choice pressed again stores nothing twice.
    mark = live.server.mark()
    await live.press(MERCHANT, offer, offer.button(0, 0))
    await live.collect("sendMessage", MERCHANT["id"], 3, after=mark)
    assert len(stored(live.core)) == 3


async def test_the_whole_message_can_be_one_review(start_bot):
    live = await start_bot()
    message, offer = await offer_for(live, PASTED)
    mark = live.server.mark()
    await live.press(MERCHANT, offer, offer.button(1, 0))
    verdict = await live.next("sendMessage", MERCHANT["id"], after=mark)
    assert verdict.params["text"][:2] in ("好评", "差评")
    assert verdict.result["reply_to_message"]["message_id"] == message["message_id"]
    assert live.server.messages[(MERCHANT["id"], offer.result["message_id"])]["text"] == (
        "整条当作一条评论判断："
    )
    (review,) = stored(live.core)
    assert review.text == PASTED.strip()


async def test_many_lines_come_back_as_a_results_file(start_bot):
    live = await start_bot()
    lines = [f"{text}（{n}）" for n in range(4) for text in LINES]
    message, offer = await offer_for(live, "\n".join(lines))
    assert offer.params["reply_markup"]["inline_keyboard"][0][0]["text"] == "📋 逐行判断（12 条）"
    mark = live.server.mark()
    await live.press(MERCHANT, offer, offer.button(0, 0))
    sent = await live.next("sendDocument", MERCHANT["id"], after=mark)
    assert sent.result["document"]["file_name"] == f"message_{message['message_id']}_results.csv"
    assert sent.result["reply_to_message"]["message_id"] == message["message_id"]
    _, content = live.server.files[sent.result["document"]["file_id"]]
    rows = list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"))))
    assert [r["review"] for r in rows] == lines
    assert sent.params["caption"].startswith("完成：12 条评论，好评 4 条，差评 8 条，好评率 33%。")
    edited = live.server.messages[(MERCHANT["id"], offer.result["message_id"])]
    assert edited["text"] == "逐行判断这 12 条：行数较多，结果放在文件里。"
    uploading = live.server.calls_of("sendChatAction", action="upload_document")
    assert uploading and uploading[0].at <= sent.at
    assert len(stored(live.core)) == 12


async def test_a_choice_whose_message_was_deleted_says_so(start_bot):
    live = await start_bot()
    _, offer = await offer_for(live, PASTED)
    # Telegram leaves out the message replied to once it is deleted.
    del live.server.messages[(MERCHANT["id"], offer.result["message_id"])]["reply_to_message"]
    answer = await live.press(MERCHANT, offer, offer.button(0, 0))
    assert answer.params["text"] == "原来那条消息已经删除了，请重新发送评论。"
    assert stored(live.core) == []


async def test_one_line_with_blank_lines_around_it_is_one_review(start_bot):
    live = await start_bot()
    verdict = await live.say(MERCHANT, f"\n{LINES[0]}\n\n")
    assert verdict.params["text"].startswith("差评 👎")
