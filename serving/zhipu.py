"""The Zhipu GLM backend: the zhipuai SDK, asked with the training prompt; answers read as labels.

The SDK is synchronous. Each review is one request, run in a pool of ``max_concurrency`` threads
and started no faster than ``max_rps``, so a batch is bounded by Zhipu's limits rather than by
serial latency. (The SDK has no asyncio client; bench/backends.py measures these threads against
httpx's asyncio client sending the same requests, and the threads are faster here.) Retries are
ours, with exponential backoff and full jitter; the SDK's own are off so the two never multiply.
A circuit breaker stops calls to a backend that is down, that refuses our key or model, or whose
quota is used up (until the reset time Zhipu states); admins hear of each such outage once.
A review the content filter refuses is declined alone: the rest of its batch stands.

Just past 300 lines: one request's path (pool, rate, retries, breaker, refusals) is one story
here; what Zhipu's replies mean is ``serving.zhipu_replies``, its Batch API ``serving.zhipu_batch``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import zhipuai
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from serving.base import Answer, BackendConfigError, BackendError, Declined, Label, Verdict
from serving.prompt import chat_messages
from serving.resilience import CircuitBreaker, RateLimiter
from serving.zhipu_replies import (
    AccountPaused,
    ContentFiltered,
    Refused,
    Retryable,
    label_of,
    parse_answer,
    translate,
)

__all__ = ["ZhipuClassifier", "accepts_thinking", "label_of", "parse_answer"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://open.bigmodel.cn/api/paas/v4"
ANSWER_MAX_TOKENS = 8
"""A label is one or two tokens; a little room lets "这是好评" still be read."""
RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
"""Asks the SDK for the HTTP response instead of its parsed models (its ``with_raw_response``)."""
THINKING_DISABLED = {"thinking": {"type": "disabled"}}
"""Sent in ``extra_body``: the SDK has a ``thinking`` argument only since 2.1.5.20250726."""
MODEL_VERSION = re.compile(r"glm-(\d+)(?:\.(\d+))?", re.IGNORECASE)


def accepts_thinking(model: str) -> bool:
    """Whether a model code is one of GLM-4.5 or later, the models that take ``thinking``
    (Zhipu's 深度思考 guide). They think before answering unless told not to, and thinking
    alone outgrows ``max_tokens`` 8; GLM-4 and the always-thinking GLM-Z1 do not take it."""
    version = MODEL_VERSION.match(model)
    return version is not None and (int(version[1]), int(version[2] or 0)) >= (4, 5)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ZhipuClassifier:
    """Classifies reviews with one Zhipu model (a base model or a fine-tuned one)."""

    backend = "zhipu"

    def __init__(
        self,
        api_key: str,
        model: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 30.0,
        max_concurrency: int = 32,
        max_rps: float = 100.0,
        retries: int = 3,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 8.0,
        breaker_failures: int = 5,
        breaker_reset_s: float = 30.0,
        account_pause_s: float = 3600.0,
        max_tokens: int = ANSWER_MAX_TOKENS,
        disable_thinking: bool | None = None,
        on_alert: Callable[[str], None] | None = None,
    ) -> None:
        """``account_pause_s``: how long calls stop after a quota or account error whose message
        names no reset time. ``disable_thinking``: send ``thinking: disabled`` (None: when the
        model code is GLM-4.5 or later). ``on_alert``: told once per outage that needs a person
        or a wait (a refused key or model, no balance, a used-up quota, a locked account)."""
        if not api_key:
            raise BackendConfigError("no Zhipu API key is set (ZHIPU__API_KEY)")
        self._model = model
        self._model_id = f"zhipu:{model}"
        self._timeout_s = timeout_s
        self._max_concurrency = max_concurrency
        self._retries = retries
        self._backoff = wait_random_exponential(multiplier=backoff_initial_s, max=backoff_max_s)
        self._max_tokens = max_tokens
        if disable_thinking is None:
            disable_thinking = accepts_thinking(model)
        self._extra_body = THINKING_DISABLED if disable_thinking else None
        self._http = httpx.Client(
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            )
        )
        self._client = zhipuai.ZhipuAI(
            api_key=api_key,
            base_url=base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            max_retries=0,
            http_client=self._http,
        )
        self._threads = ThreadPoolExecutor(max_concurrency, thread_name_prefix="zhipu")
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._limiter = RateLimiter(max_rps)
        self._breaker_reset_s = breaker_reset_s
        self._account_pause_s = account_pause_s
        self.breaker = CircuitBreaker(breaker_failures, breaker_reset_s)
        self._on_alert = on_alert
        self._outage_lock = threading.Lock()
        self._outage_code: str | None = None
        self.refusal: Refused | AccountPaused | None = None
        """Why Zhipu will not answer us, until a request is answered again (for readiness)."""

    @property
    def model_id(self) -> str:
        return self._model_id

    async def classify(self, texts: Sequence[str]) -> list[Answer]:
        """One answer per text: a verdict, or ``Declined`` for a review the content filter
        refused. Any other review that cannot be classified fails the batch."""
        texts = list(texts)
        answers: list[Answer] = []
        if texts and self.breaker.is_open:
            # The first review goes alone: as the probe if one is due, else it fails at once.
            answers.append(await self._classify_one(texts.pop(0)))
        tasks = [asyncio.ensure_future(self._classify_one(text)) for text in texts]
        try:
            answers.extend(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return answers

    async def probe(self) -> None:
        """Raise what stops this model from answering now (a refusal, or an open circuit);
        sends nothing, since every request to Zhipu is paid for."""
        self.raise_if_refused()
        refusal = self.breaker.refusal()
        if refusal is not None:
            raise refusal

    def raise_if_refused(self) -> None:
        """Raise Zhipu's refusal (a refused key or model, no balance, a used-up quota, a locked
        account) until the circuit lets a probe go.

        For readiness and routing: a version whose backend refuses us cannot answer now, and
        asking it would cost a round trip per review before the fallback answers.
        """
        refusal = self.refusal
        if refusal is not None and self.breaker.refusing:
            raise refusal.with_traceback(None)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    async def _classify_one(self, text: str) -> Answer:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Retryable),
            stop=stop_after_attempt(self._retries + 1),
            wait=self._backoff,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return Verdict(await self._attempt(text), None, self._model_id)
        except ContentFiltered as error:
            return Declined(str(error), self._model_id)
        except Retryable as error:
            raise BackendError(
                f"gave up after {self._retries + 1} attempts; the last: {error}"
            ) from error
        raise AssertionError("tenacity ended without an outcome")  # pragma: no cover

    async def _attempt(self, text: str) -> Label:
        async with self._slot():
            await self._limiter.wait()
            self.breaker.before_call()
            loop = asyncio.get_running_loop()
            try:
                completion = await loop.run_in_executor(self._threads, self._create, text)
            except zhipuai.ZhipuAIError as error:
                raise self._failed(
                    translate(error, model=self._model, timeout_s=self._timeout_s)
                ) from error
            except ValueError as error:
                self._answered()
                raise BackendError(f"Zhipu's answer is not JSON: {error}") from error
            except BaseException:
                self.breaker.abandoned()
                raise
        self._answered()
        return label_of(completion)

    def _slot(self) -> asyncio.Semaphore:
        """This event loop's bound on requests in flight (a semaphore belongs to one loop)."""
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self._max_concurrency)
        return slots

    def _create(self, text: str) -> Any:
        """The answer's JSON body. The SDK's raw-response mode skips its response models, whose
        parsing costs ~9 ms of CPU per answer (a new pydantic TypeAdapter per field) and would
        cap the whole pool at ~100 answers/s under the GIL."""
        raw = self._client.chat.completions.create(
            **self._question(text),
            extra_headers={RAW_RESPONSE_HEADER: "true"},
            extra_body=self._extra_body,
        )
        return raw.http_response.json()

    def _question(self, text: str) -> dict[str, Any]:
        """What one review's request asks, the same one by one and in a batch."""
        return {
            "model": self._model,
            "messages": chat_messages(text),
            "do_sample": False,
            "max_tokens": self._max_tokens,
        }

    def _failed(self, error: BackendError) -> BackendError:
        if isinstance(error, (Refused, AccountPaused)):
            self._refused(error)
        elif isinstance(error, Retryable) and error.backend_down:
            self.breaker.failed(str(error))
        else:
            self._answered()  # throttled, or this one request refused: Zhipu is up, takes us
        return error

    def _refused(self, refusal: Refused | AccountPaused) -> None:
        """Stop calling until the refusal can have changed, and tell whoever watches once."""
        pause_s = self._breaker_reset_s
        if isinstance(refusal, AccountPaused):
            pause_s = self._account_pause_s
            if refusal.resets_at is not None:
                pause_s = max(refusal.resets_at - time.time(), self._breaker_reset_s)
        self.breaker.trip(str(refusal), for_s=pause_s)
        with self._outage_lock:
            self.refusal = refusal
            news = self._outage_code != refusal.code
            self._outage_code = refusal.code
        if not news:
            return
        notice = (
            f"{self._model_id} cannot answer: {refusal}. Reviews go to the fallback; one is "
            f"sent to Zhipu again in {_duration(pause_s)}."
        )
        log.error("%s", notice)
        if self._on_alert is not None:
            try:
                self._on_alert(notice)
            except Exception:
                log.exception("could not pass on the alert: %s", notice)

    def _answered(self) -> None:
        """Zhipu answered a request (even refusing that one review): it is up and takes us."""
        self.breaker.succeeded()
        if self.refusal is None and self._outage_code is None:
            return
        with self._outage_lock:
            ended, self.refusal, self._outage_code = self._outage_code, None, None
        if ended is not None:
            log.warning("%s answers again (the outage was code %s)", self._model_id, ended)

    async def classify_bulk(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> list[Verdict | Declined]:
        """One answer per text through one job of Zhipu's Batch API (half the price, outside
        the rate limits; serving/zhipu_batch.py), each line asking what ``_create`` asks; the
        lines it leaves go through ``classify``. BackendError if the Batch API cannot be used:
        then ``classify`` is the way."""
        from serving.zhipu_batch import classify_in_batch

        self.raise_if_refused()

        def body(text: str) -> dict[str, Any]:
            return self._question(text) | (self._extra_body or {})

        return await classify_in_batch(
            self._client,
            texts,
            body=body,
            model_id=self._model_id,
            one_by_one=self.classify,
            progress=progress,
            timeout_s=self._timeout_s,
        )
