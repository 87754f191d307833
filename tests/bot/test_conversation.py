"""Scenarios: a merchant classifies reviews, confirms, corrects and undoes, through real polling."""

from __future__ import annotations

from sqlmodel import Session, col, select

from core.store.tables import LabelEvent, LabelKind, Review
from tests.bot.conftest import ADMIN, ENGLISH, MERCHANT, OTHER_MERCHANT

NEGATIVE_REVIEW = "送餐太慢了，菜都凉了，再也不点了"
POSITIVE_REVIEW = "味道很好，分量足，送得也快，还会再点"
OWN_MODEL = "已记录：会用于训练你自己的模型；有其他商家或管理员同意后再进入共享模型。"


def label_events(core) -> list[LabelEvent]:
    with Session(core.engine) as session:
        return list(
            session.exec(
                select(LabelEvent)
                .where(col(LabelEvent.kind) != LabelKind.IMPORT)
                .order_by(col(LabelEvent.id))
            ).all()
        )


async def test_classify_correct_and_undo(start_bot):
    live = await start_bot()
    reply = await live.say(MERCHANT, NEGATIVE_REVIEW)
    assert reply.params["text"].startswith("差评 👎 置信度 ")
    assert reply.params["text"].endswith("%")
    right, wrong = (b["text"] for b in reply.params["reply_markup"]["inline_keyboard"][0])
    assert (right, wrong) == ("✅ 对", "❌ 不对，是好评")

    mark = live.server.mark()
    answer = await live.press(MERCHANT, reply, reply.button(0, 1))
    assert answer.params["text"] == "已记录，谢谢！"
    edited = await live.next("editMessageText", MERCHANT["id"], after=mark)
    assert edited.params["text"] == f"{reply.params['text']}\n\n✏️ 已更正为：好评\n{OWN_MODEL}"
    assert edited.params["reply_markup"]["inline_keyboard"][0][0]["text"] == "↩ 撤销"
    (event,) = label_events(live.core)
    assert (event.kind, event.label, event.actor) == (LabelKind.CORRECTION, 1, "telegram:2001")
    with Session(live.core.engine) as session:
        review = session.get(Review, event.review_id)
    assert review is not None
    assert (review.text, review.tenant) == (NEGATIVE_REVIEW, "telegram:2001")

    mark = live.server.mark()
    answer = await live.press(MERCHANT, reply, edited.button())
    assert answer.params["text"] == "已撤销"
    restored = await live.next("editMessageText", MERCHANT["id"], after=mark)
    assert restored.params["text"] == reply.params["text"]
    assert [b["text"] for b in restored.params["reply_markup"]["inline_keyboard"][0]] == [
        right,
        wrong,
    ]
    (event,) = label_events(live.core)
    assert event.revoked_at is not None

    answer = await live.press(MERCHANT, reply, restored.button(0, 0))
    assert answer.params["text"] == "已记录，谢谢！"
    assert [e.kind for e in label_events(live.core)] == [
        LabelKind.CORRECTION,
        LabelKind.CONFIRMATION,
    ]


def forged(data: str, field: int, value: str) -> str:
    parts = data.split(":")
    parts[field] = value
    return ":".join(parts)


async def test_forged_and_replayed_presses_are_refused(start_bot):
    live = await start_bot()
    reply = await live.say(MERCHANT, NEGATIVE_REVIEW)
    confirm = reply.button(0, 0)
    elsewhere = await live.say(OTHER_MERCHANT, POSITIVE_REVIEW)

    attempts = [
        forged(confirm, 3, "1" if confirm.split(":")[3] == "0" else "0"),  # the label flipped
        forged(confirm, 1, str(int(confirm.split(":")[1]) + 1)),  # another review
        forged(confirm, 5, "AAAAAAAAAAA"),  # a made-up signature
        "l:1:1:1:1",
        "hello",
    ]
    for data in attempts:
        answer = await live.press(MERCHANT, reply, data)
        assert answer.params["text"] == "这个按钮无效。"
        assert answer.params["show_alert"] is True
    # A genuine button, pressed in another chat than the one it was made for.
    answer = await live.press(OTHER_MERCHANT, elsewhere, confirm)
    assert answer.params["text"] == "这个按钮无效。"
    assert label_events(live.core) == []
    assert live.server.calls_of("editMessageText") == []


async def test_only_the_reviews_merchant_or_an_admin_may_label_it(start_bot):
    live = await start_bot()
    group = -100123
    reply = await live.say(MERCHANT, NEGATIVE_REVIEW, chat_id=group)

    answer = await live.press(OTHER_MERCHANT, reply, reply.button(0, 1))
    assert answer.params["text"] == "找不到这条记录，或它不属于你。"
    assert label_events(live.core) == []

    mark = live.server.mark()
    answer = await live.press(ADMIN, reply, reply.button(0, 1))
    assert answer.params["text"] == "已记录，谢谢！"
    edited = await live.next("editMessageText", group, after=mark)
    assert edited.params["text"].endswith("\n已记录：管理员的标注，直接进入共享模型。")
    (event,) = label_events(live.core)
    assert (event.actor, event.kind) == ("telegram:1000", LabelKind.CORRECTION)

    # The merchant may not undo the admin's label; the admin may.
    answer = await live.press(MERCHANT, reply, edited.button())
    assert answer.params["text"] == "你不能操作这条记录。"
    answer = await live.press(ADMIN, reply, edited.button())
    assert answer.params["text"] == "已撤销"
    # Undoing twice is refused, in Chinese.
    answer = await live.press(ADMIN, reply, edited.button())
    assert answer.params["text"] == "已经撤销过了，或已超过 10 分钟的撤销时限。"


async def test_a_label_joins_the_shared_model_once_another_merchant_agrees(start_bot):
    live = await start_bot()
    mine = await live.say(MERCHANT, NEGATIVE_REVIEW)
    await live.press(MERCHANT, mine, mine.button(0, 0))
    theirs = await live.say(OTHER_MERCHANT, NEGATIVE_REVIEW)
    mark = live.server.mark()
    await live.press(OTHER_MERCHANT, theirs, theirs.button(0, 0))
    edited = await live.next("editMessageText", OTHER_MERCHANT["id"], after=mark)
    assert edited.params["text"] == (
        f"{theirs.params['text']}\n\n✅ 已确认：差评\n"
        "已记录：2 个商家给了相同的标注，会进入共享模型。"
    )
    # Undo still puts the verdict and its buttons back.
    mark = live.server.mark()
    await live.press(OTHER_MERCHANT, theirs, edited.button())
    restored = await live.next("editMessageText", OTHER_MERCHANT["id"], after=mark)
    assert restored.params["text"] == theirs.params["text"]


async def test_english_speakers_hear_what_became_of_their_label_in_english(start_bot):
    live = await start_bot()
    reply = await live.say(ENGLISH, NEGATIVE_REVIEW)
    mark = live.server.mark()
    answer = await live.press(ENGLISH, reply, reply.button(0, 1))
    assert answer.params["text"] == "Recorded, thank you!"
    edited = await live.next("editMessageText", ENGLISH["id"], after=mark)
    assert edited.params["text"] == (
        f"{reply.params['text']}\n\n✏️ Corrected to: 好评 (positive)\n"
        "Recorded: it will train your own model; it joins the shared model once another "
        "merchant or an admin agrees."
    )
