"""The vLLM backend: a LoRA adapter served by vLLM's OpenAI-compatible server.

Each review is one chat completion with the training prompt, ``temperature: 0`` and the answer
constrained to the two label words (``structured_outputs``). The confidence comes from the
logprobs of the first token where the two words' tokenizations differ, matched by token id; the
ids are resolved once from the tokenizer the server itself serves.

``VllmServer`` is the management side: health, the models listed, loading and unloading
adapters at runtime (the server must run with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from serving.base import BackendError, Label, Verdict
from serving.prompt import ANSWER_WORDS, chat_messages

TOKEN_ID_PREFIX = "token_id:"  # noqa: S105 - a token of text, not a secret
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class VllmRefused(BackendError):
    """The server is up and answered, but with an error (a bad adapter, an unknown name)."""


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _error_text(response: httpx.Response) -> str:
    """The server's own message from an error body, or the start of the body."""
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except (ValueError, AttributeError):
        pass
    return response.text[:300] or response.reason_phrase


class VllmServer:
    """Health, models and runtime adapter loading of one vLLM server."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = _headers(api_key)
        self._timeout = httpx.Timeout(timeout_s)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            async with httpx.AsyncClient(
                base_url=self.base_url, headers=self._headers, timeout=self._timeout
            ) as client:
                response = await client.request(method, path, json=body)
        except httpx.HTTPError as error:
            raise BackendError(f"vLLM at {self.base_url} unreachable: {error!r}") from error
        if response.status_code != 200:
            raise VllmRefused(
                f"vLLM {method} {path} answered {response.status_code}: {_error_text(response)}"
            )
        try:
            return response.json()
        except ValueError:
            return response.text

    async def models(self) -> list[str]:
        """The names the server answers to: the base model and every loaded adapter."""
        listed = await self._call("GET", "/v1/models")
        try:
            return [str(model["id"]) for model in listed["data"]]
        except (KeyError, TypeError) as error:
            raise BackendError(f"vLLM listed its models in an unknown shape: {listed!r}") from error

    async def ready(self, adapter: str | None = None) -> None:
        """Return if the server is up (and serves ``adapter``, if given), else BackendError."""
        await self._call("GET", "/health")
        if adapter is not None and adapter not in await self.models():
            raise BackendError(f"vLLM at {self.base_url} is up but does not serve {adapter!r}")

    async def load_adapter(self, name: str, path: str) -> None:
        """Load the adapter in folder ``path`` (as the server sees it) under the new ``name``."""
        await self._call("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})

    async def unload_adapter(self, name: str) -> None:
        await self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name})


@dataclass(frozen=True)
class AnswerTokens:
    """The token ids of each answer word, and where the two words' tokens first differ."""

    ids: dict[Label, tuple[int, ...]]
    decisive: int

    @classmethod
    def from_ids(cls, ids: dict[Label, tuple[int, ...]]) -> AnswerTokens:
        positive, negative = ids[Label.POSITIVE], ids[Label.NEGATIVE]
        for position, (a, b) in enumerate(zip(positive, negative, strict=False)):
            if a != b:
                return cls(ids, position)
        raise BackendError(f"the answer words tokenize to nested token ids: {ids}")

    @property
    def max_tokens(self) -> int:
        return max(len(ids) for ids in self.ids.values()) + 1


@dataclass
class _Connection:
    """What belongs to one event loop: the HTTP connection pool and the concurrency limit."""

    client: httpx.AsyncClient
    slots: asyncio.Semaphore
    tokens_lock: asyncio.Lock


class VllmClassifier:
    """Classifies with one adapter (or the base model) of a vLLM server."""

    backend = "vllm"

    def __init__(
        self,
        base_url: str,
        adapter: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        concurrency: int = 64,
        retries: int = 2,
        top_logprobs: int = 20,
    ) -> None:
        self.adapter = adapter
        self.server = VllmServer(base_url, api_key=api_key, timeout_s=timeout_s)
        self._headers = _headers(api_key)
        self._timeout = httpx.Timeout(timeout_s)
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

    async def ready(self) -> None:
        """BackendError unless the server is up and lists this adapter."""
        await self.server.ready(self.adapter)

    async def classify(self, texts: Sequence[str]) -> list[Verdict]:
        if not texts:
            return []
        connection = self._connection()
        answers = await self._answer_tokens(connection)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._one(connection, answers, t)) for t in texts]
        except ExceptionGroup as failures:
            first = failures.exceptions[0]
            if isinstance(first, BackendError):
                raise first from None
            raise BackendError(f"vLLM classification failed: {first!r}") from first
        return [task.result() for task in tasks]

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
                timeout=self._timeout,
                limits=httpx.Limits(
                    max_connections=self._concurrency, max_keepalive_connections=self._concurrency
                ),
            )
            connection = _Connection(client, asyncio.Semaphore(self._concurrency), asyncio.Lock())
            self._connections[loop] = connection
        return connection

    async def _post(self, connection: _Connection, path: str, body: dict[str, Any]) -> Any:
        """POST with bounded retries on transport errors and retryable statuses."""
        last = ""
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(0.1 * 2**attempt)
            try:
                async with connection.slots:
                    response = await connection.client.post(path, json=body)
            except httpx.HTTPError as error:
                last = f"{type(error).__name__}: {error}"
                continue
            if response.status_code == 200:
                try:
                    return response.json()
                except ValueError as error:
                    raise BackendError(f"vLLM sent a body that is not JSON: {error}") from error
            last = f"{response.status_code} {_error_text(response)}"
            if response.status_code not in RETRY_STATUSES:
                break
        raise BackendError(f"vLLM {path} for {self.adapter!r} failed: {last}")

    async def _answer_tokens(self, connection: _Connection) -> AnswerTokens:
        if self._answers is not None:
            return self._answers
        async with connection.tokens_lock:
            if self._answers is None:
                self._answers = await self._resolve_answer_tokens(connection)
        return self._answers

    async def _resolve_answer_tokens(self, connection: _Connection) -> AnswerTokens:
        """Tokenize the chat with and without each answer, exactly as the server renders it."""
        messages = chat_messages("好")
        prompt = await self._tokenize(connection, messages, add_generation_prompt=True)
        ids = {}
        for word in ANSWER_WORDS:
            answered = [*messages, {"role": "assistant", "content": word}]
            full = await self._tokenize(
                connection, answered, add_generation_prompt=False, continue_final_message=True
            )
            if full[: len(prompt)] != prompt or len(full) == len(prompt):
                raise BackendError(f"cannot find the tokens of {word!r} in the rendered chat")
            ids[Label.from_zh(word)] = tuple(full[len(prompt) :])
        return AnswerTokens.from_ids(ids)

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
            "temperature": 0,
            "max_tokens": answers.max_tokens,
            "logprobs": True,
            "top_logprobs": self._top_logprobs,
            "return_tokens_as_token_ids": True,
            "structured_outputs": {"choice": list(ANSWER_WORDS)},
        }
        completion = await self._post(connection, "/v1/chat/completions", body)
        try:
            choice = completion["choices"][0]
            word = (choice["message"]["content"] or "").strip()
            steps = (choice.get("logprobs") or {}).get("content") or []
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            raise BackendError(f"vLLM answered in an unknown shape: {completion!r}") from error
        if word not in ANSWER_WORDS:
            raise BackendError(f"vLLM answered {word!r}, not one of {list(ANSWER_WORDS)}")
        label = Label.from_zh(word)
        return Verdict(label, _confidence(answers, label, steps), self.model_id)


def _token_id(token: str) -> int:
    if not token.startswith(TOKEN_ID_PREFIX):
        raise BackendError(f"vLLM did not return token ids in its logprobs: {token!r}")
    return int(token.removeprefix(TOKEN_ID_PREFIX))


def _confidence(answers: AnswerTokens, label: Label, steps: list[dict[str, Any]]) -> float | None:
    """p(answer token) / (p(answer token) + p(the other word's token)) at the decisive position.

    The answer's token is the greedy pick among the tokens the constraint allows, so the result
    is at least 0.5. A word missing from the top logprobs is bounded by the smallest listed.
    None if the answer was spelled with tokens other than the word's own before that position.
    """
    k = answers.decisive
    if len(steps) <= k:
        return None
    try:
        spelled = [_token_id(step["token"]) for step in steps[: k + 1]]
        top = {_token_id(t["token"]): float(t["logprob"]) for t in steps[k]["top_logprobs"]}
        top[spelled[k]] = float(steps[k]["logprob"])
    except (KeyError, TypeError, ValueError) as error:
        raise BackendError(f"vLLM sent logprobs in an unknown shape: {steps!r}") from error
    if spelled[:k] != list(answers.ids[label][:k]):
        return None
    other = Label(1 - label)
    chosen_logprob = top[spelled[k]]
    other_logprob = top.get(answers.ids[other][k], min(top.values()))
    if not math.isfinite(chosen_logprob):
        return None
    other_p = math.exp(other_logprob - chosen_logprob) if math.isfinite(other_logprob) else 0.0
    return min(1.0, 1.0 / (1.0 + other_p))
