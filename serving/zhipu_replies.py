"""What Zhipu's replies mean: an answer read as a label, an error sorted by what can help.

Zhipu says what went wrong in the body's code, not in the HTTP status: 429 carries throttling
(worth a retry), but also used-up quotas and locked accounts (not before a reset, or a person),
and no balance (a person). Codes from Zhipu's error-code page (docs.bigmodel.cn/cn/api/api-code).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import zhipuai

from serving.base import BackendConfigError, BackendError, Label

THROTTLE_CODES = {"1302": "too many concurrent requests", "1303": "too many requests"}
THROTTLE_CODES |= {"1305": "Zhipu is overloaded"}
CONFIG_CODES = {"1113": "the Zhipu account has no balance left"}
MODEL_CODES = {
    "1211": "Zhipu has no model {model!r}: register a model code that exists",
    "1220": "this Zhipu account may not use the model {model!r}",
}
QUOTA_CODES = {
    "1304": "today's call quota is used up",
    "1308": "a usage limit is reached",
    "1310": "the weekly or monthly usage limit is reached",
}
LOCKED_CODES = {
    "1112": "the Zhipu account is locked; its owner must ask Zhipu to unlock it",
    "1121": "the Zhipu account is locked for a rule violation",
}
CONTENT_FILTER_CODE = "1301"
ZHIPU_TIME = timezone(timedelta(hours=8), "Beijing")
"""The zone of the reset times in Zhipu's messages (China keeps one zone and no summer time)."""
RESET_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
"""As in 1308's "您的限额将在 2025-12-09 18:08:11 重置" (or "Your limit will reset at ...")."""


class Retryable(BackendError):
    """A failure worth another try. ``backend_down`` ones count towards the circuit breaker."""

    def __init__(self, message: str, *, backend_down: bool) -> None:
        super().__init__(message)
        self.backend_down = backend_down


class ContentFiltered(BackendError):
    """Zhipu's content filter refused this one review (1301) or withheld its answer."""


class Refused(BackendConfigError):
    """Zhipu refuses us as configured (the key, the balance, the model): until someone fixes it,
    every request gets the same answer. ``code`` is Zhipu's (or the HTTP status)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class AccountPaused(BackendError):
    """The account may not call now: a quota is used up or the account is locked. Calls stop
    until ``resets_at`` (a Unix time, when Zhipu's message gave one) rather than being retried."""

    def __init__(self, message: str, *, code: str, resets_at: float | None) -> None:
        super().__init__(message)
        self.code = code
        self.resets_at = resets_at


def translate(error: Exception, *, model: str, timeout_s: float) -> BackendError:
    """The SDK's exception as ours, by what can help: a retry, a wait, a person, or nothing."""
    if isinstance(error, zhipuai.APITimeoutError):
        return Retryable(f"Zhipu did not answer within {timeout_s:g}s", backend_down=True)
    if isinstance(error, zhipuai.APIConnectionError):
        return Retryable(f"cannot reach Zhipu: {error.__cause__ or error}", backend_down=True)
    if not isinstance(error, zhipuai.APIStatusError):
        return BackendError(f"the zhipuai SDK failed: {error}")
    status = error.status_code
    code, message = _error_body(error.response)
    said = f"Zhipu answered {status} (code {code or '-'}: {message})"
    if status == 401:
        return Refused(f"{said}; check ZHIPU__API_KEY", code=code or "401")
    if code in CONFIG_CODES:
        return Refused(f"{said}: {CONFIG_CODES[code]}", code=code)
    if code in MODEL_CODES:
        return Refused(f"{said}: {MODEL_CODES[code].format(model=model)}", code=code)
    if code in QUOTA_CODES or code in LOCKED_CODES:
        why = QUOTA_CODES.get(code) or LOCKED_CODES[code]
        return AccountPaused(f"{said}: {why}", code=code, resets_at=reset_time(message))
    if code == CONTENT_FILTER_CODE:
        return ContentFiltered(f"{said}: the content filter refused the review")
    if status == 429 or code in THROTTLE_CODES:
        return Retryable(f"{said}: {THROTTLE_CODES.get(code, 'rate limited')}", backend_down=False)
    if status >= 500 or status == 408:
        return Retryable(said, backend_down=True)
    return BackendError(said)


def reset_time(message: str) -> float | None:
    """The Unix time at which a quota resets, as Zhipu's message states it (Beijing time)."""
    found = RESET_TIME.search(message)
    if found is None:
        return None
    try:
        stated = datetime.strptime(found.group(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return stated.replace(tzinfo=ZHIPU_TIME).timestamp()


def _error_body(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of a Zhipu error body ``{"error": {"code": ..., "message": ...}}``."""
    try:
        error = response.json()["error"]
        return str(error.get("code") or ""), str(error.get("message") or "")[:200]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", response.text[:200]


def label_of(completion: Any) -> Label:
    """The label in a chat completion body (``choices[0].message.content``), or an error that
    says why there is none: the content filter, an answer cut at ``max_tokens``, no label."""
    try:
        choice = completion["choices"][0]
        finish_reason, message = choice.get("finish_reason"), choice["message"]
        content, reasoning = message.get("content"), message.get("reasoning_content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise BackendError(f"Zhipu's answer has no message: {str(completion)[:200]}") from None
    if finish_reason == "sensitive":
        raise ContentFiltered(
            "the content filter withheld Zhipu's answer (finish_reason sensitive)"
        )
    if finish_reason == "length":
        tokens = (completion.get("usage") or {}).get("completion_tokens", "?")
        raise BackendError(
            f"Zhipu's answer was cut off at {tokens} tokens (finish_reason length): content "
            f"{(content or '')[:100]!r}, reasoning {(reasoning or '')[:100]!r}"
            + ("; a reasoning model needs ZHIPU__DISABLE_THINKING=true" if reasoning else "")
        )
    return parse_answer(content)


def parse_answer(content: str | None) -> Label:
    """The label in an answer: 好评 or 差评 alone, or an answer containing exactly one of them."""
    answer = (content or "").strip()
    found = [label for label in Label if label.zh in answer]
    if len(found) == 1:
        return found[0]
    raise BackendError(f"Zhipu's answer is not a label: {answer[:200]!r}")
