"""The bot's words: every fate a label can have is said in Chinese and in English."""

from __future__ import annotations

import re

import pytest

from bot import texts
from core.labels.rules import FATE_CODES, Fate, FateStatus

HAN = re.compile(r"[\u4e00-\u9fff]")


@pytest.mark.parametrize("code", FATE_CODES)
def test_every_fate_is_worded_in_both_languages(code: str):
    fate = Fate(FateStatus.PENDING, code, own_view=True, n=3, trust=0.42)
    zh, en = texts.fate(fate, "zh"), texts.fate(fate, "en")
    assert HAN.search(zh), zh
    assert en.isascii() and en != zh, en
    assert "{" not in zh + en, "every placeholder is filled"
    if code == "corroborated":
        assert "3" in zh and "3" in en
    if code == "flagged":
        assert "42%" in zh and "42%" in en


def test_a_label_that_teaches_only_your_own_model_says_so():
    fate = Fate(FateStatus.PENDING, "awaiting_corroboration", own_view=True)
    assert texts.fate(fate, "zh") == (
        "已记录：会用于训练你自己的模型；有其他商家或管理员同意后再进入共享模型。"
    )
    assert "your own model" in texts.fate(fate, "en")
