"""Signed button data: short enough for Telegram, and refused when altered, moved or stale."""

from __future__ import annotations

import pytest

from bot.keyboards import ButtonSigner, LabelPress, UndoPress, label_keyboard
from core.errors import InvalidInput
from serving.base import Label

BIG = 2**31 - 1  # the id columns are INTEGER
CHAT = -1001234567890


def signer(now: float = 1_800_000_000.0, key: bytes = b"k" * 32) -> ButtonSigner:
    return ButtonSigner(key, label_ttl_s=3600, undo_ttl_s=600, clock=lambda: now)


def test_data_fits_in_64_bytes_even_with_the_largest_ids():
    keyboard = label_keyboard(
        signer(),
        chat_id=CHAT,
        review_id=BIG,
        prediction_id=BIG,
        predicted=Label.POSITIVE,
        lang="zh",
    )
    for button in keyboard.inline_keyboard[0]:
        assert button.callback_data is not None
        assert len(button.callback_data.encode()) <= 64
    undo = signer().sign(UndoPress(event=BIG, issued=0), CHAT)
    assert len(undo.encode()) <= 64


def test_a_signed_press_round_trips():
    data = signer().sign(LabelPress(review=5, prediction=7, label=1, issued=0), CHAT)
    press = signer(now=1_800_000_100.0).verify(data, CHAT)
    assert press == LabelPress(review=5, prediction=7, label=1, issued=1_800_000_000, mac=press.mac)


@pytest.mark.parametrize("field", [1, 2, 3, 4])
def test_any_altered_field_is_refused(field):
    data = signer().sign(LabelPress(review=5, prediction=7, label=1, issued=0), CHAT)
    parts = data.split(":")
    parts[field] = str(int(parts[field]) ^ 1)
    with pytest.raises(InvalidInput) as refused:
        signer().verify(":".join(parts), CHAT)
    assert refused.value.code == "bad_button"


@pytest.mark.parametrize(
    ("chat", "key", "change"),
    [
        (CHAT + 1, b"k" * 32, lambda data: data),  # made for another chat
        (CHAT, b"other key", lambda data: data),  # signed by someone else
        (CHAT, b"k" * 32, lambda data: "u" + data[1:]),  # a label press passed off as an undo
        (CHAT, b"k" * 32, lambda data: None),  # no data at all
    ],
)
def test_another_chat_key_or_kind_is_refused(chat, key, change):
    data = signer().sign(LabelPress(review=5, prediction=7, label=1, issued=0), CHAT)
    with pytest.raises(InvalidInput) as refused:
        signer(key=key).verify(change(data), chat)
    assert refused.value.code == "bad_button"


def test_old_presses_expire():
    label = signer().sign(LabelPress(review=5, prediction=7, label=1, issued=0), CHAT)
    undo = signer().sign(UndoPress(event=3, issued=0), CHAT)
    signer(now=1_800_000_000.0 + 600).verify(undo, CHAT)
    for data, age in ((label, 3601), (undo, 601)):
        with pytest.raises(InvalidInput) as refused:
            signer(now=1_800_000_000.0 + age).verify(data, CHAT)
        assert refused.value.code == "stale_button"
