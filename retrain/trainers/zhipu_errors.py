"""What a refusal from Zhipu means for a fine-tune: try again at the next look, wait until the
stated time, or end the job.

Zhipu's code says which, not the HTTP status (docs.bigmodel.cn/cn/faq/api-code): a used-up quota
(1304/1308/1310) or a locked account (1112/1121) comes as 429 like throttling, yet asking again
before the reset only adds refusals; no balance (1113, also 429), a bad parameter (1214), a model
that does not exist (1211) or may not be used (1220), fine-tuning not open to the account (404,
code 1600), no API access (434) and a file over 100 MB (435) give the same answer until a person
acts. Those end the job; only ``waimai finetune zhipu --retry`` launches its snapshot again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import zhipuai

from core.errors import AppError, BackendUnavailable
from serving.zhipu_replies import AccountPaused, ContentFiltered, Refused, Retryable, translate


class NotConfigured(AppError):
    code = "not_configured"


class OverBudget(AppError):
    """The estimated cost of a fine-tune is above the per-job or the monthly budget."""

    code = "over_budget"


class TooFewNewLabels(AppError):
    """Too few examples are new since the last fine-tune to be worth paying for another."""

    code = "too_few_new_labels"


class FineTuneRefused(AppError):
    """Zhipu refuses the request, and would refuse it again: asking again cannot help."""

    code = "finetune_refused"


class FineTunePaused(AppError):
    """Zhipu takes no fine-tune calls until ``until``: a used-up quota or a locked account."""

    code = "finetune_paused"

    def __init__(self, message: str, *, until: datetime) -> None:
        super().__init__(message)
        self.until = until


@contextmanager
def zhipu_calls(model: str, pause_s: float, timeout_s: float) -> Iterator[None]:
    """The SDK's exceptions as AppErrors: ``FineTuneRefused`` (for good), ``FineTunePaused``
    (until Zhipu's stated reset time, else ``pause_s`` from now), ``NotConfigured`` (the key),
    ``BackendUnavailable`` (worth another look later)."""
    try:
        yield
    except zhipuai.APIAuthenticationError as error:
        raise NotConfigured(f"Zhipu refused the API key: {error}") from error
    except zhipuai.ZhipuAIError as error:
        raise meaning(error, model=model, pause_s=pause_s, timeout_s=timeout_s) from error


def meaning(
    error: zhipuai.ZhipuAIError, *, model: str, pause_s: float, timeout_s: float
) -> AppError:
    said = translate(error, model=model, timeout_s=timeout_s)
    if isinstance(said, AccountPaused):
        now = datetime.now(UTC)
        until = (
            datetime.fromtimestamp(said.resets_at, UTC)
            if said.resets_at is not None and said.resets_at > now.timestamp()
            else now + timedelta(seconds=pause_s)
        )
        return FineTunePaused(
            f"{said}; fine-tunes wait until {until:%Y-%m-%d %H:%M} UTC", until=until
        )
    if isinstance(said, (Refused, ContentFiltered)):
        return FineTuneRefused(str(said))
    if isinstance(said, Retryable):
        return BackendUnavailable(f"Zhipu did not do it: {said}")
    status = error.status_code if isinstance(error, zhipuai.APIStatusError) else None
    if status is not None and 400 <= status < 500:
        return FineTuneRefused(str(said))
    return BackendUnavailable(f"Zhipu did not do it: {said}")
