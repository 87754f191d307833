"""Scenarios: /stats and /queue for a merchant, each seeing only their own reviews."""

from __future__ import annotations

from core.models import registry
from tests.bot.conftest import MERCHANT, OTHER_MERCHANT

REVIEWS = ["送餐太慢了，菜都凉了", "味道很好，分量足", "还行吧，一般般", "菜有点咸，不过送得快"]


async def test_stats_count_reviews_and_corrections_of_the_last_week(start_bot):
    live = await start_bot()
    replies = [await live.say(MERCHANT, text) for text in REVIEWS]
    await live.press(MERCHANT, replies[0], replies[0].button(0, 1))
    positive = sum(r.params["text"].startswith("好评") for r in replies[1:])
    positive += 1  # the corrected first review is now 好评

    stats = await live.say(MERCHANT, "/stats")
    model = registry.active(live.core.engine)
    assert stats.params["text"] == (
        f"最近 7 天：评论 4 条，好评率 {positive / 4:.0%}；已标注 1 条，更正 1 条（更正率 25%）。\n"
        f"当前模型：#{model.id}（local），留出集准确率 {model.metrics['accuracy']:.1%}。"
    )
    other = await live.say(OTHER_MERCHANT, "/stats")
    assert other.params["text"].startswith("最近 7 天：评论 0 条，好评率 —；已标注 0 条，更正 0 条")


async def test_queue_shows_the_least_confident_unlabelled_reviews_with_buttons(start_bot):
    live = await start_bot()
    replies = [await live.say(MERCHANT, text) for text in REVIEWS]
    await live.press(MERCHANT, replies[0], replies[0].button(0, 0))

    mark = live.server.mark()
    await live.server.send_text(MERCHANT, "/queue")
    head, *queued = await live.collect("sendMessage", MERCHANT["id"], 4, after=mark)
    assert head.params["text"] == "下面 3 条评论模型最没把握，请帮忙确认："
    shown = [c.params["text"].split("\n")[0] for c in queued]
    assert sorted(shown) == sorted(f"「{text}」" for text in REVIEWS[1:])
    confidences = [int(c.params["text"].rsplit(" ", 1)[1].rstrip("%")) for c in queued]
    assert confidences == sorted(confidences), "least confident first"

    press_mark = live.server.mark()
    answer = await live.press(MERCHANT, queued[0], queued[0].button(0, 0))
    assert answer.params["text"] == "已记录，谢谢！"
    edited = await live.next("editMessageText", MERCHANT["id"], after=press_mark)
    assert edited.params["text"].startswith(queued[0].params["text"] + "\n\n✅ 已确认：")

    assert (await live.say(OTHER_MERCHANT, "/queue")).params["text"] == (
        "最近 7 天没有待确认的评论 🎉"
    )
