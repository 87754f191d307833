"""Scenarios: who may use the bot. Strangers are refused politely and nothing of theirs is kept."""

from __future__ import annotations

from sqlmodel import Session, col, select

from core.store.tables import Invite, Review, TelegramUser
from tests.bot.conftest import ADMIN, ENGLISH, MERCHANT, OTHER_MERCHANT, STRANGER

REFUSAL = "抱歉，这个机器人只对受邀商家开放。请向管理员索取邀请链接。"
BAD_INVITE = "这个邀请码无效或已被使用。请向管理员索取新的邀请链接。"
REVIEW = "味道不错，分量足，还会再点"


def stored_for(core, person) -> tuple[int, bool]:
    """(reviews stored under the person's tenant, whether they have a user row)."""
    with Session(core.engine) as session:
        reviews = session.exec(
            select(Review).where(col(Review.tenant) == f"telegram:{person['id']}")
        ).all()
        return len(reviews), session.get(TelegramUser, person["id"]) is not None


async def test_invite_mode_admits_one_user_per_code(start_bot):
    live = await start_bot(access="invite")

    assert (await live.say(STRANGER, REVIEW)).params["text"] == REFUSAL
    assert (await live.say(STRANGER, "/start")).params["text"] == REFUSAL
    assert (await live.say(STRANGER, "/start not-a-code")).params["text"] == BAD_INVITE
    assert stored_for(live.core, STRANGER) == (0, False)

    code = live.core.merchants.create_invite(created_by="test").code
    welcome = await live.say(MERCHANT, f"/start {code}")
    assert welcome.params["text"].startswith("你好！我把外卖评论分成好评或差评。")
    assert "/model" not in welcome.params["text"]
    assert (await live.say(MERCHANT, REVIEW)).params["text"].startswith("好评 👍")
    assert (await live.say(OTHER_MERCHANT, f"/start {code}")).params["text"] == BAD_INVITE

    with Session(live.core.engine) as session:
        invite = session.get(Invite, code)
        member = session.get(TelegramUser, MERCHANT["id"])
    assert invite is not None
    assert invite.used_by == MERCHANT["id"]
    assert member is not None
    assert (member.invite_code, member.role, member.language) == (code, "merchant", "zh-hans")
    assert stored_for(live.core, MERCHANT) == (1, True)
    assert stored_for(live.core, OTHER_MERCHANT) == (0, False)


async def test_admins_are_always_admitted_and_told_their_commands(start_bot):
    live = await start_bot(access="invite")
    welcome = await live.say(ADMIN, "/start")
    admin_commands = "管理员命令：/model 当前模型和它的报告图，/retrain 申请重新训练。"
    assert admin_commands in welcome.params["text"]
    assert (await live.say(ADMIN, REVIEW)).params["text"].startswith("好评 👍")


async def test_allowlist_mode(start_bot):
    live = await start_bot(access="allowlist", allowlist=[MERCHANT["id"]])
    assert (await live.say(MERCHANT, REVIEW)).params["text"].startswith("好评 👍")
    assert (await live.say(OTHER_MERCHANT, REVIEW)).params["text"] == REFUSAL
    code = live.core.merchants.create_invite(created_by="test").code
    assert (await live.say(OTHER_MERCHANT, f"/start {code}")).params["text"] == REFUSAL
    assert stored_for(live.core, OTHER_MERCHANT) == (0, False)
    with Session(live.core.engine) as session:
        invite = session.get(Invite, code)
    assert invite is not None
    assert invite.used_by is None, "invites mean nothing outside invite mode"


async def test_english_speakers_get_english(start_bot):
    live = await start_bot()
    welcome = await live.say(ENGLISH, "/start")
    assert welcome.params["text"].startswith("Hi! I classify takeaway reviews")
    verdict = await live.say(ENGLISH, "太难吃了，送得又慢")
    assert verdict.params["text"].startswith("差评 👎 confidence ")
    buttons = [b["text"] for b in verdict.params["reply_markup"]["inline_keyboard"][0]]
    assert buttons == ["✅ Right", "❌ Wrong, it's 好评 (positive)"]
