"""Many reviews in one offline job: Zhipu's Batch API, for the holdout evaluation.

Sent one by one, the 3,597 holdout reviews are 3,597 requests within the account's rate limits.
The Batch API takes them as one JSONL file (purpose ``batch``), answers within 24 hours, is billed
at half the per-request price and does not count against the rate limits (Zhipu's 批量处理
docs; GLM-4-Flash itself costs nothing either way). Each line asks exactly what a request asks,
and each answer is read by the same ``label_of``: a review the content filter refuses is declined
alone, and a line that failed otherwise, or that an expired batch never reached, is asked
request by request. A refused file, a failed batch or one not done within the window raises
``BackendError``, and the caller classifies request by request.

The batch's metadata carries a key of its model, parameters and texts: an evaluation restarted
while its batch runs (or within the 30 days Zhipu keeps the answers) finds it again instead of
paying twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import zhipuai

from serving.base import Answer, BackendError, Declined, Verdict
from serving.zhipu_replies import ContentFiltered, Retryable, label_of, translate

log = logging.getLogger(__name__)

ENDPOINT = "/v4/chat/completions"
"""The one endpoint a batch may ask (Zhipu's docs; the SDK's type hint says ``/v1/...``)."""
KEY = "waimai_key"
UNUSABLE = frozenset({"failed", "expired", "cancelled", "cancelling"})
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
POLL_FIRST_S = 0.5
POLL_MAX_S = 30.0
"""Zhipu asks for a look every 20-30 s; the first looks come sooner for a small batch."""
WAIT_MAX_S = 24 * 3600.0
"""Zhipu's promise; a batch still running then is cancelled and the reviews asked one by one."""
FAILED_LOOKS_MAX = 5


async def classify_in_batch(
    client: zhipuai.ZhipuAI,
    texts: Sequence[str],
    *,
    body: Callable[[str], dict[str, Any]],
    model_id: str,
    one_by_one: Callable[[Sequence[str]], Awaitable[list[Answer]]],
    progress: Callable[[int], None] | None = None,
    timeout_s: float = 30.0,
    wait_max_s: float = WAIT_MAX_S,
) -> list[Answer]:
    """One answer per text, through one batch; ``body`` is a text's request body, ``one_by_one``
    the per-request path for the lines the batch did not answer, ``timeout_s`` the client's."""
    texts = list(texts)
    if not texts:
        return []
    lines: list[dict[str, Any]] = [
        {"custom_id": custom_id(i), "method": "POST", "url": ENDPOINT, "body": body(text)}
        for i, text in enumerate(texts)
    ]
    reported = 0

    def report(done: int) -> None:
        nonlocal reported
        if progress is not None and done > reported:
            progress(done - reported)
            reported = done

    model = str(lines[0]["body"].get("model"))
    try:
        batch = await asyncio.to_thread(_batch_for, client, lines)
        batch = await _done(client, batch, report, wait_max_s, model=model, timeout_s=timeout_s)
        answers = await asyncio.to_thread(_answers, client, batch, len(texts), model_id)
    except zhipuai.ZhipuAIError as error:
        said = translate(error, model=model, timeout_s=timeout_s)
        raise BackendError(f"Zhipu's Batch API did not do it: {said}") from error
    missing = [i for i, answer in enumerate(answers) if answer is None]
    if missing:
        log.info("batch %s left %d of %d reviews to ask alone", batch.id, len(missing), len(texts))
        for i, answer in zip(missing, await one_by_one([texts[i] for i in missing]), strict=True):
            answers[i] = answer
    report(len(texts))
    return [answer for answer in answers if answer is not None]


def custom_id(index: int) -> str:
    """A line's id: Zhipu wants at least 6 characters."""
    return f"review-{index:06d}"


def batch_key(lines: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(json.dumps(line["body"], ensure_ascii=False, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def _batch_for(client: zhipuai.ZhipuAI, lines: list[dict[str, Any]]) -> Any:
    """The batch that asks ``lines``: one created for them earlier, or a new one."""
    key = batch_key(lines)
    for batch in client.batches.list(limit=100).data:
        if (batch.metadata or {}).get(KEY) == key and batch.status not in UNUSABLE:
            log.info("batch %s asks these reviews already (%s)", batch.id, batch.status)
            return batch
    content = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    uploaded = client.files.create(
        file=(f"waimai-{key[:12]}.jsonl", content.encode()), purpose="batch"
    )
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=cast(Any, ENDPOINT),
        metadata={KEY: key},
        auto_delete_input_file=True,
    )


async def _done(
    client: zhipuai.ZhipuAI,
    batch: Any,
    report: Callable[[int], None],
    wait_max_s: float,
    *,
    model: str,
    timeout_s: float,
) -> Any:
    """The batch once it has ended, looked at with a growing interval; a look that fails for a
    reason worth a retry is taken again, a few times in a row at most."""
    started, delay, failed_looks = time.monotonic(), POLL_FIRST_S, 0
    while batch.status not in ENDED:
        if time.monotonic() - started > wait_max_s:
            await asyncio.to_thread(_cancel_quietly, client, batch.id)
            raise BackendError(f"Zhipu's batch {batch.id} was not done in {wait_max_s:g} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, POLL_MAX_S)
        try:
            batch = await asyncio.to_thread(client.batches.retrieve, batch.id)
        except zhipuai.ZhipuAIError as error:
            failed_looks += 1
            said = translate(error, model=model, timeout_s=timeout_s)
            if not isinstance(said, Retryable) or failed_looks >= FAILED_LOOKS_MAX:
                raise
            log.warning("batch %s: %s; looking again", batch.id, said)
            continue
        failed_looks = 0
        report(_counted(batch))
    if batch.status == "failed":
        errors = (
            [f"{e.code}: {e.message}" for e in (batch.errors.data or [])] if batch.errors else []
        )
        raise BackendError(f"Zhipu's batch {batch.id} failed: {'; '.join(errors) or 'no reason'}")
    return batch


def _answers(client: zhipuai.ZhipuAI, batch: Any, count: int, model_id: str) -> list[Answer | None]:
    """Each line's answer; None where the batch gave none that stands (asked again alone)."""
    answers: list[Answer | None] = [None] * count
    for line in _lines(client, batch.output_file_id) + _lines(client, batch.error_file_id):
        index = int(str(line["custom_id"]).removeprefix("review-"))
        response = line.get("response") or {}
        if response.get("status_code") == 200:
            try:
                answers[index] = Verdict(label_of(response["body"]), None, model_id)
            except ContentFiltered as refused:
                answers[index] = Declined(str(refused), model_id)
        elif _error_code(line) == "1301":
            answers[index] = Declined("Zhipu's content filter refused the review (1301)", model_id)
    return answers


def _lines(client: zhipuai.ZhipuAI, file_id: str | None) -> list[dict[str, Any]]:
    if not file_id:
        return []
    content = client.files.content(file_id).content
    return [json.loads(line) for line in content.decode("utf-8").splitlines() if line.strip()]


def _error_code(line: dict[str, Any]) -> str:
    """A failed line's Zhipu code, in its response body or beside it."""
    error = line.get("error") or ((line.get("response") or {}).get("body") or {}).get("error")
    return str((error or {}).get("code") or "")


def _counted(batch: Any) -> int:
    counts = batch.request_counts
    return (counts.completed or 0) + (counts.failed or 0) if counts is not None else 0


def _cancel_quietly(client: zhipuai.ZhipuAI, batch_id: str) -> None:
    try:
        client.batches.cancel(batch_id)
    except zhipuai.ZhipuAIError as error:
        log.warning("could not cancel batch %s: %s", batch_id, error)
