"""The bot's words: every fate a label can have, and every error code anything may raise, is
said in Chinese and in English."""

from __future__ import annotations

import ast
import re
from pathlib import Path

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


SOURCES = ("core", "retrain", "api", "bot", "cli", "serving")
"""Where an AppError may be raised from, and so reach a merchant or an admin."""
ROOT = Path(__file__).resolve().parents[2]


def app_error_codes() -> dict[str, str]:
    """Every AppError code in the sources (code → where it is first seen): each subclass's
    ``code`` default, and each ``code=`` given when one is made (a literal, or a module
    constant). A ``code=`` the scan cannot resolve fails the test, so none slips past."""
    trees = {path: ast.parse(path.read_text(), str(path)) for path in _sources()}
    bases: dict[str, set[str]] = {}
    defaults: dict[str, tuple[str, str]] = {}
    constants: dict[str, set[str]] = {}
    for path, tree in trees.items():
        for statement in tree.body:
            target, value = _assignment(statement)
            if target and isinstance(value, ast.Constant) and isinstance(value.value, str):
                constants.setdefault(target, set()).add(value.value)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases.setdefault(node.name, set()).update(_name(b) for b in node.bases)
                for item in node.body:
                    name, value = _assignment(item)
                    if name == "code" and isinstance(value, ast.Constant):
                        where = f"{path.relative_to(ROOT)}:{item.lineno}"
                        defaults[node.name] = (str(value.value), where)
    errors = {"AppError"}
    while grown := {c for c, b in bases.items() if b & errors and c not in errors}:
        errors |= grown
    codes = {code: where for name, (code, where) in defaults.items() if name in errors}
    for path, tree in trees.items():
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and _name(call.func) in errors):
                continue
            for keyword in call.keywords:
                if keyword.arg != "code":
                    continue
                where = f"{path.relative_to(ROOT)}:{call.lineno}"
                value = keyword.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    codes.setdefault(value.value, where)
                elif isinstance(value, ast.Name) and len(constants.get(value.id, ())) == 1:
                    codes.setdefault(next(iter(constants[value.id])), where)
                else:
                    pytest.fail(f"{where}: an AppError's code the scan cannot tell")
    return codes


def _sources() -> list[Path]:
    return sorted(p for package in SOURCES for p in (ROOT / package).rglob("*.py"))


def _assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        return (target.id if isinstance(target, ast.Name) else None), node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, node.value
    return None, None


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else ""


CODES = app_error_codes()


def test_the_scan_finds_the_codes_it_must():
    raised_with_a_constant = {"gate_refused", "idempotency_conflict"}
    raised_with_a_literal = {"adapter_refused", "admins_only", "invalid_invite", "file_type"}
    defaults = {"app_error", "invalid_input", "finetune_paused", "not_configured"}
    assert raised_with_a_constant | raised_with_a_literal | defaults <= set(CODES)


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_error_code_has_a_reply_in_both_languages(code: str):
    assert code in texts.error_codes(), f"{code} (at {CODES[code]}) has no text in bot/texts.py"
    limits = {"max_mb": 20.0, "max_chars": 2000, "undo_minutes": 10.0}
    zh = texts.error(code, "zh", detail="the detail", **limits)
    en = texts.error(code, "en", detail="the detail", **limits)
    assert HAN.search(zh), zh
    assert en.isascii() and not HAN.search(en), en
    assert "{" not in zh + en, "every placeholder is filled"
