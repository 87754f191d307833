"""Scenarios: a merchant sends more than the throttle allows. Every message is answered in turn,
or named as not taken; none is dropped without a word, and none waiting is lost to a restart."""

from __future__ import annotations

import asyncio
import re
import time

from sqlmodel import Session, col, select

from bot import texts
from bot.throttle import MAX_MESSAGE_CHARS, refusal_notices
from core.store.tables import LabelEvent, Review, TelegramUpdate
from tests.bot.conftest import MERCHANT
from tests.fakes.telegram_server import Call

REVIEWS = [f"送餐太慢了，菜都凉了（第 {n} 单）" for n in range(1, 11)]
QUEUED_NOTICE = re.compile(
    r"消息有点多：每 1 秒我最多处理 3 条，后面的先排队，会按顺序逐条回复（下一条大约 \d+ 秒后）。"
)


def stored_reviews(core) -> list[str]:
    with Session(core.engine) as session:
        tenant = f"telegram:{MERCHANT['id']}"
        return list(session.exec(select(Review.text).where(col(Review.tenant) == tenant)).all())


def verdicts(calls: list[Call]) -> dict[int, Call]:
    """The verdicts among the bot's messages, by the message they answer."""
    return {
        c.result["reply_to_message"]["message_id"]: c
        for c in calls
        if c.status == 200
        and c.params["text"][:2] in ("好评", "差评")
        and "reply_to_message" in c.result
    }


async def test_a_burst_over_the_limit_is_answered_in_turn_or_named_as_not_taken(start_bot):
    live = await start_bot(throttle_messages=3, throttle_window_s=1, queue_messages=4)
    mark = live.server.mark()
    pushed = time.monotonic()
    sent = [await live.server.send_text(MERCHANT, review) for review in REVIEWS]

    # 3 verdicts at once, a notice that the rest wait, 4 verdicts in turn, 1 notice of the 3
    # not taken.
    replies = await live.collect("sendMessage", MERCHANT["id"], 9, after=mark)
    texts_sent = [c.params["text"] for c in replies]
    assert sum(bool(QUEUED_NOTICE.fullmatch(t)) for t in texts_sent) == 1, texts_sent
    answered = verdicts(replies)
    (refusal,) = [t for t in texts_sent if t.startswith("排队的消息已满")]

    assert sorted(answered) == [m["message_id"] for m in sent[:7]], "the first 7, in turn"
    assert refusal.splitlines()[:4] == [
        "排队的消息已满（最多 4 条），下面 3 条没有收下，也没有保存：",
        f"1. 「{REVIEWS[7]}」",
        f"2. 「{REVIEWS[8]}」",
        f"3. 「{REVIEWS[9]}」",
    ]
    assert refusal.endswith(
        "把它们放进一个 CSV、TXT 或 XLSX 文件（每行一条）发给我，一次全部判断。"
    )
    assert sorted(stored_reviews(live.core)) == sorted(REVIEWS[:7])

    # In turn, never faster than the limit: 3 at once, 3 a second later, the last after two.
    times = [answered[m["message_id"]].at - pushed for m in sent[:7]]
    assert all(t >= 1.0 for t in times[3:6]) and times[6] >= 2.0, times

    # Nothing more comes: every message was answered or named.
    await asyncio.sleep(1.5)
    assert len(live.server.calls_of("sendMessage", chat_id=MERCHANT["id"])) == 9


async def test_messages_waiting_in_line_survive_a_restart(start_bot):
    first = await start_bot(throttle_messages=1, throttle_window_s=60, queue_messages=5)
    mark = first.server.mark()
    sent = [await first.server.send_text(MERCHANT, review) for review in REVIEWS[:3]]
    replies = await first.collect("sendMessage", MERCHANT["id"], 2, after=mark)
    assert list(verdicts(replies)) == [sent[0]["message_id"]]
    assert any(c.params["text"].startswith("消息有点多：每 60 秒我最多处理 1 条") for c in replies)
    last_id = max(u for u in _update_ids(first))
    await first.server.wait_for(
        "getUpdates", lambda c: c.params.get("offset", 0) > last_id, after=mark
    )

    await first.dispatcher.stop_polling()
    await first.polling
    assert stored_reviews(first.core) == [REVIEWS[0]]
    assert _held(first.core) == 2, "the two waiting are held in the store"

    mark = first.server.mark()
    again = await start_bot()
    answers = await again.collect("sendMessage", MERCHANT["id"], 2, after=mark)
    assert sorted(verdicts(answers)) == [m["message_id"] for m in sent[1:]]
    assert sorted(stored_reviews(again.core)) == sorted(REVIEWS[:3])
    assert _held(again.core) == 0


async def test_a_press_over_the_limit_is_told_to_wait(start_bot):
    live = await start_bot(throttle_messages=1, throttle_window_s=60)
    verdict = await live.say(MERCHANT, REVIEWS[0])
    answer = await live.press(MERCHANT, verdict, verdict.button(0, 0))
    assert answer.params["show_alert"] is True
    assert re.fullmatch(r"点得太快啦，请 \d+ 秒后再点。", answer.params["text"])
    with Session(live.core.engine) as session:
        merchant = col(LabelEvent.actor) == f"telegram:{MERCHANT['id']}"
        assert session.exec(select(LabelEvent).where(merchant)).all() == [], "nothing recorded"


def test_a_long_list_of_messages_not_taken_is_split_within_telegram_limits():
    refused = [texts.quoted(f"第 {n} 条：" + "送餐太慢了" * 10, 30) for n in range(1, 301)]
    notices = refusal_notices(refused, 100, "en")
    assert len(notices) > 1
    assert all(len(notice) <= MAX_MESSAGE_CHARS for notice in notices)
    assert notices[0].startswith("The line is full (at most 100 messages), so these 300 were not")
    assert all(notice.startswith("(continued) Messages not taken:") for notice in notices[1:])
    numbered = [line for n in notices for line in n.splitlines() if re.match(r"\d+\. ", line)]
    assert [int(line.split(".")[0]) for line in numbered] == list(range(1, 301))
    assert notices[-1].endswith("I classify a whole file at once.")


def _update_ids(live) -> list[int]:
    return [u["update_id"] for c in live.server.calls_of("getUpdates") for u in c.result or []]


def _held(core) -> int:
    with Session(core.engine) as session:
        waiting = select(TelegramUpdate).where(col(TelegramUpdate.handled_at).is_(None))
        return len(session.exec(waiting).all())
