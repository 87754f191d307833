"""The vLLM backend: a LoRA adapter served by vLLM's OpenAI-compatible server.

Each review is one chat completion with the training prompt, greedy and otherwise neutral
sampling (vLLM would apply the model's own generation_config.json: a repetition penalty there
hits the label words wherever a review contains them), and the answer constrained to the two
label words as the chat template renders them (``structured_outputs``). The confidence comes
from the logprobs of the two words' decisive tokens (``serving.vllm_answers``).

Every request ends within ``timeout_s``, retries included, and a circuit breaker stops calls to a
server that keeps failing, so a hung server costs seconds before the fallback answers. A server
that lost the adapter (it restarted) is told to load it again, by ``probe`` or by the first
request that finds it missing.

Just past 300 lines: one request's path (deadline, retries, breaker, the adapter put back) is one
story here; the server's management is ``serving.vllm_server``, the answer's tokens
``serving.vllm_answers``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from serving.base import BackendError, Label, Verdict
from serving.prompt import ANSWER_WORDS, chat_messages
from serving.resilience import CircuitBreaker
from serving.vllm_answers import AnswerTokens, confidence
from serving.vllm_server import (
    ModelNotServed,
    VllmRefused,
    VllmServer,
    auth_headers,
    error_text,
    refusal,
)

__all__ = ["ModelNotServed", "VllmClassifier", "VllmRefused", "VllmServer"]

log = logging.getLogger(__name__)

NEUTRAL_SAMPLING = {
    "temperature": 0.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}
"""vLLM's own neutral values, sent with every request so no generation_config.json applies."""
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
DOWN_STATUSES = frozenset({408, 500, 502, 503, 504})


class _ServerDown(BackendError):
    """No answer, or a 5xx: the kind of failure the circuit breaker counts."""


@dataclass
class _Connection:
    """What belongs to one event loop: the HTTP connection pool and the locks."""

    client: httpx.AsyncClient
    slots: asyncio.Semaphore
    tokens_lock: asyncio.Lock
    restore_lock: asyncio.Lock


class VllmClassifier:
    """Classifies with one adapter (or the base model) of a vLLM server.

    ``adapter_path`` is the adapter's folder as the server sees it: with it, an adapter the
    server lost is loaded again.
    """

    backend = "vllm"

    def __init__(
        self,
        base_url: str,
        adapter: str,
        *,
        adapter_path: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 5.0,
        concurrency: int = 64,
        retries: int = 2,
        top_logprobs: int = 20,
        breaker_failures: int = 5,
        breaker_reset_s: float = 30.0,
    ) -> None:
        self.adapter = adapter
        self.adapter_path = adapter_path
        self.server = VllmServer(base_url, api_key=api_key, timeout_s=timeout_s)
        self.breaker = CircuitBreaker(breaker_failures, breaker_reset_s)
        self._headers = auth_headers(api_key)
        self._timeout_s = timeout_s
        self._concurrency = concurrency
        self._retries = retries
        self._top_logprobs = top_logprobs
        self._answers: AnswerTokens | None = None
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connection] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def model_id(self) -> str:
        return f"vllm:{self.adapter}"

    async def probe(self) -> None:
        """BackendError unless the server is up and serves the adapter, which it loads again if
        the server lost it; ``CircuitOpen`` while the breaker is open."""
        circuit_open = self.breaker.refusal()
        if circuit_open is not None:
            raise circuit_open
        try:
            async with asyncio.timeout(self._timeout_s):
                await self.server.health()
                listed = await self.server.models()
        except TimeoutError:
            reason = f"vLLM at {self.server.base_url} did not answer in {self._timeout_s:g}s"
            self.breaker.failed(reason)
            raise BackendError(reason) from None
        except VllmRefused as error:
            if error.status in DOWN_STATUSES:
                self.breaker.failed(str(error))
            raise
        except BackendError as error:
            self.breaker.failed(str(error))
            raise
        if self.adapter not in listed:
            await self._restore_adapter(self._connection())

    async def classify(self, texts: Sequence[str]) -> list[Verdict]:
        if not texts:
            return []
        connection = self._connection()
        answers = await self._answer_tokens(connection)
        texts = list(texts)
        verdicts = []
        if self.breaker.is_open:
            # The first review goes alone: as the breaker's probe if one is due, else it fails.
            verdicts.append(await self._one(connection, answers, texts.pop(0)))
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._one(connection, answers, t)) for t in texts]
        except ExceptionGroup as failures:
            first = failures.exceptions[0]
            if isinstance(first, BackendError):
                raise first from None
            raise BackendError(f"vLLM classification failed: {first!r}") from first
        return verdicts + [task.result() for task in tasks]

    async def aclose(self) -> None:
        """Close this event loop's connections (the classifier stays usable)."""
        connection = self._connections.pop(asyncio.get_running_loop(), None)
        if connection is not None:
            await connection.client.aclose()

    def _connection(self) -> _Connection:
        # An httpx pool and an asyncio primitive belong to the loop they were first used on.
        loop = asyncio.get_running_loop()
        connection = self._connections.get(loop)
        if connection is None:
            client = httpx.AsyncClient(
                base_url=self.server.base_url,
                headers=self._headers,
                timeout=httpx.Timeout(self._timeout_s),
                limits=httpx.Limits(
                    max_connections=self._concurrency, max_keepalive_connections=self._concurrency
                ),
            )
            slots = asyncio.Semaphore(self._concurrency)
            connection = _Connection(client, slots, asyncio.Lock(), asyncio.Lock())
            self._connections[loop] = connection
        return connection

    async def _post(self, connection: _Connection, path: str, body: dict[str, Any]) -> Any:
        """POST, retried on transport errors and retryable statuses, all within ``timeout_s``.

        A server that does not serve the adapter is told to load it again, once."""
        try:
            return await self._post_once(connection, path, body)
        except ModelNotServed:
            if self.adapter_path is None:
                raise
            await self._restore_adapter(connection)
        return await self._post_once(connection, path, body)

    async def _post_once(self, connection: _Connection, path: str, body: dict[str, Any]) -> Any:
        self.breaker.before_call()
        try:
            async with connection.slots, asyncio.timeout(self._timeout_s):
                answer = await self._attempts(connection, path, body)
        except TimeoutError:
            reason = f"vLLM {path} for {self.adapter!r} gave no answer in {self._timeout_s:g}s"
            self.breaker.failed(reason)
            raise BackendError(reason) from None
        except _ServerDown as error:
            self.breaker.failed(str(error))
            raise
        except BackendError:
            self.breaker.succeeded()  # it answered, if with an error: it is up
            raise
        except BaseException:
            self.breaker.abandoned()
            raise
        self.breaker.succeeded()
        return answer

    async def _attempts(self, connection: _Connection, path: str, body: dict[str, Any]) -> Any:
        last = ""
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(0.1 * 2**attempt)
            try:
                response = await connection.client.post(path, json=body)
            except httpx.HTTPError as error:
                last = f"{type(error).__name__}: {error}"
                continue
            if response.status_code == 200:
                try:
                    return response.json()
                except ValueError as error:
                    raise BackendError(f"vLLM sent a body that is not JSON: {error}") from error
            if response.status_code not in RETRY_STATUSES:
                raise refusal(response, f"vLLM {path} for {self.adapter!r}")
            last = f"{response.status_code} {error_text(response)}"
        raise _ServerDown(f"vLLM {path} for {self.adapter!r} failed: {last}")

    async def _restore_adapter(self, connection: _Connection) -> None:
        """Load the adapter again: the server lost it (a restart). BackendConfigError if the
        server refuses it, BackendError if it cannot (no folder known, no answer)."""
        if self.adapter_path is None:
            raise BackendError(
                f"vLLM at {self.server.base_url} does not serve {self.adapter!r} (and its folder "
                "is not known here, to load it)"
            )
        async with connection.restore_lock:
            if await self.server.ensure_adapter(self.adapter, self.adapter_path):
                log.warning(
                    "vLLM at %s had lost adapter %s (a restart?): loaded it again from %s",
                    self.server.base_url,
                    self.adapter,
                    self.adapter_path,
                )

    async def _answer_tokens(self, connection: _Connection) -> AnswerTokens:
        if self._answers is not None:
            return self._answers
        async with connection.tokens_lock:
            if self._answers is None:
                self._answers = await self._render_answers(connection)
        return self._answers

    async def _render_answers(self, connection: _Connection) -> AnswerTokens:
        """Each answer's tokens and text, rendered by the chat template the server serves."""
        messages = chat_messages("好")
        prompt = await self._tokenize(connection, messages, add_generation_prompt=True)
        texts, ids = {}, {}
        for word in ANSWER_WORDS:
            answered = [*messages, {"role": "assistant", "content": word}]
            full = await self._tokenize(
                connection, answered, add_generation_prompt=False, continue_final_message=True
            )
            if full[: len(prompt)] != prompt or len(full) == len(prompt):
                raise BackendError(f"cannot find the tokens of {word!r} in the rendered chat")
            label = Label.from_zh(word)
            ids[label] = tuple(full[len(prompt) :])
            detokenized = await self._post(
                connection, "/detokenize", {"model": self.adapter, "tokens": list(ids[label])}
            )
            try:
                texts[label] = str(detokenized["prompt"])
            except (KeyError, TypeError) as error:
                raise BackendError(f"vLLM /detokenize answered {detokenized!r}") from error
        return AnswerTokens.of(texts, ids)

    async def _tokenize(
        self, connection: _Connection, messages: list[dict[str, str]], **flags: bool
    ) -> list[int]:
        body = {"model": self.adapter, "messages": messages, "add_special_tokens": False, **flags}
        answer = await self._post(connection, "/tokenize", body)
        try:
            return [int(token) for token in answer["tokens"]]
        except (KeyError, TypeError, ValueError) as error:
            raise BackendError(f"vLLM /tokenize answered {answer!r}") from error

    async def _one(self, connection: _Connection, answers: AnswerTokens, text: str) -> Verdict:
        body = {
            "model": self.adapter,
            "messages": chat_messages(text),
            **NEUTRAL_SAMPLING,
            "max_tokens": answers.max_tokens,
            "logprobs": True,
            "logprob_token_ids": answers.decisive_ids,
            "top_logprobs": self._top_logprobs,  # what servers without logprob_token_ids list
            "return_tokens_as_token_ids": True,
            "structured_outputs": {"choice": answers.choices},
        }
        completion = await self._post(connection, "/v1/chat/completions", body)
        try:
            choice = completion["choices"][0]
            content = choice["message"]["content"]
            steps = (choice.get("logprobs") or {}).get("content") or []
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            raise BackendError(f"vLLM answered in an unknown shape: {completion!r}") from error
        label = answers.label_of(content)
        return Verdict(label, confidence(answers, label, steps), self.model_id)
