"""/start (with an invite code from a deep link, maybe) and /help."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import Message

from bot import texts
from core.access.merchants import Member
from core.wiring import Core


def router() -> Router:
    router = Router(name="start")
    router.message.register(start, CommandStart())
    router.message.register(help_, Command("help"))
    return router


async def start(message: Message, command: CommandObject, core: Core, lang: texts.Lang) -> None:
    user = message.from_user
    assert user is not None
    member = await core.merchants.admit(
        user.id, language=user.language_code or "", invite_code=command.args
    )
    await message.answer(welcome(member, lang))


async def help_(message: Message, member: Member, lang: texts.Lang) -> None:
    await message.answer(welcome(member, lang))


def welcome(member: Member, lang: texts.Lang) -> str:
    text = texts.t("welcome", lang)
    return f"{text}\n{texts.t('welcome_admin', lang)}" if member.is_admin else text
