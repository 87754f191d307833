"""The Zhipu GLM backend: the zhipuai SDK, asked with the training prompt; answers read as labels.

The SDK is synchronous. Each review is one request, run in a pool of ``max_concurrency`` threads
and started no faster than ``max_rps``, so a batch is bounded by Zhipu's limits rather than by
serial latency. (The SDK has no asyncio client; bench/backends.py measures these threads against
httpx's asyncio client sending the same requests, and the threads are faster here.) Retries are
ours, with exponential backoff and full jitter; the SDK's own are off so the two never multiply.
A circuit breaker stops calls to a backend that is down, or that refuses our key.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
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

from serving.base import BackendConfigError, BackendError, Label, Verdict
from serving.prompt import chat_messages
from serving.resilience import CircuitBreaker, RateLimiter

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://open.bigmodel.cn/api/paas/v4"
ANSWER_MAX_TOKENS = 8
"""A label is one or two tokens; a little room lets "这是好评" still be read."""

CONFIG_CODES = {"1113": "the Zhipu account has no balance left"}
THROTTLE_CODES = {"1302": "too many concurrent requests", "1303": "too many requests"}
THROTTLE_CODES |= {"1305": "Zhipu is overloaded"}
CONTENT_FILTER_CODE = "1301"
RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
"""Asks the SDK for the HTTP response instead of its parsed models (its ``with_raw_response``)."""


class Retryable(BackendError):
    """A failure worth another try. ``backend_down`` ones count towards the circuit breaker."""

    def __init__(self, message: str, *, backend_down: bool) -> None:
        super().__init__(message)
        self.backend_down = backend_down


def parse_answer(content: str | None) -> Label:
    """The label in an answer: 好评 or 差评 alone, or an answer containing exactly one of them."""
    answer = (content or "").strip()
    found = [label for label in Label if label.zh in answer]
    if len(found) == 1:
        return found[0]
    raise BackendError(f"Zhipu's answer is not a label: {answer[:200]!r}")


def translate(error: Exception, timeout_s: float) -> BackendError:
    """The SDK's exception as ours: a config error, a retryable one, or a final one."""
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
        return BackendConfigError(f"{said}; check ZHIPU__API_KEY")
    if code in CONFIG_CODES:
        return BackendConfigError(f"{said}: {CONFIG_CODES[code]}")
    if code == CONTENT_FILTER_CODE:
        return BackendError(f"{said}: the content filter refused the review")
    if status == 429 or code in THROTTLE_CODES:
        return Retryable(f"{said}: {THROTTLE_CODES.get(code, 'rate limited')}", backend_down=False)
    if status >= 500 or status == 408:
        return Retryable(said, backend_down=True)
    return BackendError(said)


def _error_body(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of a Zhipu error body ``{"error": {"code": ..., "message": ...}}``."""
    try:
        error = response.json()["error"]
        return str(error.get("code") or ""), str(error.get("message") or "")[:200]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", response.text[:200]


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
        max_tokens: int = ANSWER_MAX_TOKENS,
    ) -> None:
        if not api_key:
            raise BackendConfigError("no Zhipu API key is set (ZHIPU__API_KEY)")
        self._model = model
        self._model_id = f"zhipu:{model}"
        self._timeout_s = timeout_s
        self._max_concurrency = max_concurrency
        self._retries = retries
        self._backoff = wait_random_exponential(multiplier=backoff_initial_s, max=backoff_max_s)
        self._max_tokens = max_tokens
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
        self.breaker = CircuitBreaker(breaker_failures, breaker_reset_s)
        self.config_error: BackendConfigError | None = None
        """The last configuration error, until a request succeeds again (for readiness)."""

    @property
    def model_id(self) -> str:
        return self._model_id

    async def classify(self, texts: Sequence[str]) -> list[Verdict]:
        """One verdict per text; the first review that cannot be classified fails the batch."""
        texts = list(texts)
        labels: list[Label] = []
        if texts and self.breaker.is_open:
            # The first review goes alone: as the probe if one is due, else it fails at once.
            labels.append(await self._classify_one(texts.pop(0)))
        tasks = [asyncio.ensure_future(self._classify_one(text)) for text in texts]
        try:
            labels.extend(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [Verdict(label, None, self._model_id) for label in labels]

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    async def _classify_one(self, text: str) -> Label:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Retryable),
            stop=stop_after_attempt(self._retries + 1),
            wait=self._backoff,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(text)
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
                raise self._failed(translate(error, self._timeout_s)) from error
            except ValueError as error:
                self.breaker.succeeded()
                raise BackendError(f"Zhipu's answer is not JSON: {error}") from error
            except BaseException:
                self.breaker.abandoned()
                raise
        self.breaker.succeeded()
        self.config_error = None
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
            model=self._model,
            messages=chat_messages(text),
            do_sample=False,
            max_tokens=self._max_tokens,
            extra_headers={RAW_RESPONSE_HEADER: "true"},
        )
        return raw.http_response.json()

    def _failed(self, error: BackendError) -> BackendError:
        if isinstance(error, BackendConfigError):
            if self.config_error is None:
                log.error("Zhipu backend misconfigured: %s", error)
            self.config_error = error
            self.breaker.trip(str(error))
        elif isinstance(error, Retryable) and error.backend_down:
            self.breaker.failed(str(error))
        else:
            self.breaker.succeeded()
        return error

    def raise_if_refused(self) -> None:
        """Raise the configuration error (a refused key, no balance) until a probe is due.

        For readiness: a version whose backend refuses us is not one that can answer now.
        """
        if self.config_error is not None and self.breaker.refusing:
            raise self.config_error


def label_of(completion: Any) -> Label:
    """The label in a chat completion body (``choices[0].message.content``)."""
    try:
        choice = completion["choices"][0]
        finish_reason, content = choice.get("finish_reason"), choice["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise BackendError(f"Zhipu's answer has no message: {str(completion)[:200]}") from None
    if finish_reason == "sensitive":
        raise BackendError("Zhipu's content filter withheld the answer (finish_reason sensitive)")
    return parse_answer(content)
