"""Inline buttons whose callback data is signed: ``l:<review>:<prediction>:<label>:<issued>:<mac>``
labels a verdict, ``u:<event>:<issued>:<mac>`` undoes a label, and
``m:<message>:<each>:<issued>:<mac>`` judges a message of several lines line by line, or whole.

The mac is a truncated HMAC-SHA256 over the chat id and every other field, so a press whose data
was altered, or copied into another chat, is refused; ``issued`` (unix seconds) lets stale
buttons expire. Who may label is the core's business (a merchant labels only their own reviews).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiogram.filters import Filter
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup

from bot import texts
from core.config import TelegramSettings
from core.errors import InvalidInput
from serving.base import Label

MAC_BYTES = 8


class LabelPress(CallbackData, prefix="l"):
    review: int
    prediction: int
    label: int
    issued: int
    mac: str = ""


class UndoPress(CallbackData, prefix="u"):
    event: int
    issued: int
    mac: str = ""


class LinesPress(CallbackData, prefix="m"):
    message: int
    """The merchant's message (the offer replies to it)."""
    each: bool
    """Each line is a review; else the whole message is one."""
    issued: int
    mac: str = ""


Press = LabelPress | UndoPress | LinesPress
_KINDS: dict[str, type[Press]] = {
    kind.__prefix__: kind for kind in (LabelPress, UndoPress, LinesPress)
}


@dataclass(frozen=True)
class ButtonSigner:
    key: bytes
    label_ttl_s: float
    undo_ttl_s: float
    clock: Callable[[], float] = time.time

    @classmethod
    def from_settings(cls, settings: TelegramSettings) -> ButtonSigner:
        if settings.callback_secret is not None:
            key = settings.callback_secret.get_secret_value().encode()
        elif settings.token is not None:
            token = settings.token.get_secret_value().encode()
            key = hashlib.sha256(b"waimai buttons\0" + token).digest()
        else:
            raise ValueError("buttons need TELEGRAM__CALLBACK_SECRET or TELEGRAM__TOKEN")
        return cls(key, settings.button_ttl_hours * 3600, settings.undo_minutes * 60)

    def sign(self, press: Press, chat_id: int) -> str:
        unsigned = press.model_copy(update={"issued": int(self.clock()), "mac": ""})
        return unsigned.model_copy(update={"mac": self._mac(unsigned, chat_id)}).pack()

    def verify(self, data: str | None, chat_id: int) -> Press:
        """The press, if its data is ours, unaltered, for this chat and not expired."""
        kind = _KINDS.get((data or "").split(":", 1)[0], LabelPress)
        try:
            press = kind.unpack(data or "")
        except (TypeError, ValueError):
            raise InvalidInput("unknown button data", code="bad_button") from None
        expected = self._mac(press.model_copy(update={"mac": ""}), chat_id)
        if not hmac.compare_digest(press.mac.encode(), expected.encode()):
            raise InvalidInput("button data with a bad signature", code="bad_button")
        ttl = self.undo_ttl_s if isinstance(press, UndoPress) else self.label_ttl_s
        if self.clock() - press.issued > ttl:
            raise InvalidInput("the button has expired", code="stale_button")
        return press

    def _mac(self, unsigned: Press, chat_id: int) -> str:
        message = f"{chat_id}|{unsigned.pack()}".encode()
        digest = hmac.new(self.key, message, hashlib.sha256).digest()[:MAC_BYTES]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class SignedPress(Filter):
    """Routes a button press by its kind: passes a press of ``kind`` whose data is signed for its
    chat and not expired, handing the handler the parsed ``press`` and its ``message``. Data of
    this kind that fails the check is an error reply (``bad_button`` or ``stale_button``)."""

    def __init__(self, kind: type[Press]) -> None:
        self.kind = kind

    async def __call__(
        self, callback: CallbackQuery, buttons: ButtonSigner
    ) -> bool | dict[str, Any]:
        if not (callback.data or "").startswith(self.kind.__prefix__ + self.kind.__separator__):
            return False
        if callback.message is None:
            raise InvalidInput("a press without its message", code="bad_button")
        press = buttons.verify(callback.data, callback.message.chat.id)
        return {"press": press, "message": callback.message}


def label_keyboard(
    signer: ButtonSigner,
    *,
    chat_id: int,
    review_id: int,
    prediction_id: int,
    predicted: Label,
    lang: texts.Lang,
) -> InlineKeyboardMarkup:
    """``✅ 对`` confirms the prediction, ``❌ 不对，是差评`` corrects it."""
    other = Label(1 - predicted)

    def button(text: str, label: Label) -> InlineKeyboardButton:
        press = LabelPress(review=review_id, prediction=prediction_id, label=label, issued=0)
        return InlineKeyboardButton(text=text, callback_data=signer.sign(press, chat_id))

    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                button(texts.t("button_right", lang), predicted),
                button(texts.t("button_wrong", lang, other=texts.label_name(other, lang)), other),
            ]
        ]
    )


def undo_keyboard(
    signer: ButtonSigner, *, chat_id: int, event_id: int, lang: texts.Lang
) -> InlineKeyboardMarkup:
    press = UndoPress(event=event_id, issued=0)
    button = InlineKeyboardButton(
        text=texts.t("button_undo", lang), callback_data=signer.sign(press, chat_id)
    )
    return InlineKeyboardMarkup(inline_keyboard=[[button]])


def lines_keyboard(
    signer: ButtonSigner, *, chat_id: int, message_id: int, count: int, lang: texts.Lang
) -> InlineKeyboardMarkup:
    """``📋 逐行判断（N 条）`` and ``整条算一条评论``, one a row."""

    def button(text: str, each: bool) -> InlineKeyboardButton:
        press = LinesPress(message=message_id, each=each, issued=0)
        return InlineKeyboardButton(text=text, callback_data=signer.sign(press, chat_id))

    return InlineKeyboardMarkup(
        inline_keyboard=[
            [button(texts.t("button_lines", lang, count=count), True)],
            [button(texts.t("button_whole", lang), False)],
        ]
    )
