"""The vLLM backend against a real vLLM server on the CPU, serving a LoRA adapter of our own."""

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, func, select

from core.classify.service import ReviewInput
from core.models import registry
from core.store.tables import Prediction, Source
from core.wiring import Core
from serving.base import BackendError, Classifier, Label
from serving.vllm import VllmClassifier, VllmServer
from tests.support.tiny_qwen import reviews
from tests.support.vllm_fixtures import LoraStore
from tests.support.vllm_server import VllmProcess

pytestmark = pytest.mark.slow


def sample(n: int, seed: int = 3) -> list[tuple[str, Label]]:
    rows = reviews()
    random.Random(seed).shuffle(rows)
    return [(text, Label(label)) for text, label in rows[:n]]


def test_every_answer_is_a_label_with_a_confidence_that_agrees_with_it(
    vllm_server: VllmProcess, lora_store: LoraStore, tiny_model: Path
):
    adapter = VllmClassifier(vllm_server.base_url, lora_store.first.model_ref)
    base = VllmClassifier(vllm_server.base_url, str(tiny_model))
    assert isinstance(adapter, Classifier)
    rows = sample(300)
    texts = [text for text, _ in rows]

    verdicts = asyncio.run(adapter.classify(texts))
    assert len(verdicts) == len(texts)
    for verdict in verdicts:
        assert verdict.label in (Label.POSITIVE, Label.NEGATIVE)
        assert verdict.confidence is not None
        assert 0.5 <= verdict.confidence <= 1.0
        assert verdict.model_id == f"vllm:{lora_store.first.model_ref}"
    assert len({round(v.confidence or 0, 3) for v in verdicts}) > 20, "real, varying probabilities"

    accuracy = sum(v.label == y for v, (_, y) in zip(verdicts, rows, strict=True)) / len(rows)
    base_verdicts = asyncio.run(base.classify(texts))
    base_accuracy = sum(v.label == y for v, (_, y) in zip(base_verdicts, rows, strict=True)) / len(
        rows
    )
    print(f"accuracy: adapter {accuracy:.3f}, base model {base_accuracy:.3f}")
    assert accuracy >= 0.70
    assert accuracy >= base_accuracy + 0.04, "the adapter learned the task"


def test_the_confidence_is_the_servers_own_probability_of_the_answer(
    vllm_server: VllmProcess, lora_store: LoraStore
):
    name = lora_store.first.model_ref
    text = sample(1, seed=11)[0][0]
    verdict = asyncio.run(VllmClassifier(vllm_server.base_url, name).classify([text]))[0]
    words = {}
    for word in ("好评", "差评"):
        tokens = httpx.post(
            f"{vllm_server.base_url}/tokenize",
            json={"model": name, "prompt": word, "add_special_tokens": False},
        ).json()["tokens"]
        words[word] = tokens[0]
    completion = httpx.post(
        f"{vllm_server.base_url}/v1/chat/completions",
        json={
            "model": name,
            "messages": [
                {"role": "system", "content": "你是一位外卖评论好评差评评论专家。"},
                {"role": "user", "content": text},
            ],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 20,
            "return_tokens_as_token_ids": True,
        },
        timeout=30,
    ).json()
    top = {
        int(t["token"].removeprefix("token_id:")): t["logprob"]
        for t in completion["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    }
    import math

    p = {word: math.exp(top[token]) for word, token in words.items()}
    expected = p[verdict.label.zh] / (p["好评"] + p["差评"])
    assert verdict.confidence == pytest.approx(expected, abs=1e-4)


def test_readiness_needs_the_server_up_and_the_adapter_listed(
    vllm_server: VllmProcess, lora_store: LoraStore
):
    name = lora_store.first.model_ref
    asyncio.run(VllmClassifier(vllm_server.base_url, name).ready())
    assert name in asyncio.run(VllmServer(vllm_server.base_url).models())
    with pytest.raises(BackendError, match="does not serve 'no-such-adapter'"):
        asyncio.run(VllmClassifier(vllm_server.base_url, "no-such-adapter").ready())
    with pytest.raises(BackendError, match="unreachable"):
        asyncio.run(VllmClassifier("http://127.0.0.1:9", name, timeout_s=2).ready())


def test_an_adapter_the_server_does_not_know_is_a_backend_error(vllm_server: VllmProcess):
    classifier = VllmClassifier(vllm_server.base_url, "no-such-adapter", retries=0)
    with pytest.raises(BackendError, match="404"):
        asyncio.run(classifier.classify(["好吃"]))


def test_a_server_killed_mid_batch_falls_back_to_the_local_model_and_loses_nothing(
    vllm_server: VllmProcess, lora_store: LoraStore, vllm_core: Core
):
    # The last test here on purpose: it kills the session's server (the next user restarts it).
    name = lora_store.first.model_ref
    version = registry.register(vllm_core.engine, backend="vllm", model_ref=name, metrics={})
    registry.promote(vllm_core.engine, version.id or 0)
    direct = VllmClassifier(vllm_server.base_url, name, retries=1)
    texts = [f"{text} #{i}" for i, (text, _) in enumerate(sample(1500, seed=5))]

    async def batch_and_kill() -> list[Any]:
        service = vllm_core.classification.classify(
            [ReviewInput(t) for t in texts], source=Source.API, tenant="kill-test"
        )
        tasks = [asyncio.ensure_future(service), asyncio.ensure_future(direct.classify(texts))]
        await wait_for_answers(vllm_server, at_least=answered(vllm_server) + 50)
        await asyncio.to_thread(vllm_server.kill)
        return await asyncio.gather(*tasks, return_exceptions=True)

    classified, bare_result = asyncio.run(batch_and_kill())
    assert isinstance(bare_result, BackendError)
    assert not isinstance(classified, BaseException), classified
    assert len(classified) == len(texts)
    assert all(c.fallback and c.backend == "local" for c in classified)
    assert [c.text for c in classified] == texts
    with Session(vllm_core.engine) as session:
        stored = session.exec(
            select(func.count()).where(
                col(Prediction.id).in_([c.prediction_id for c in classified])
            )
        ).one()
    assert stored == len(texts)


def answered(server: VllmProcess) -> int:
    """Chat completions the server has answered so far, by its access log."""
    log = server.log_path.read_text(errors="replace")
    return log.count('POST /v1/chat/completions HTTP/1.1" 200')


async def wait_for_answers(server: VllmProcess, at_least: int, timeout_s: float = 120) -> None:
    """Until the server's log shows ``at_least`` answered completions: the batch is under way."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answered(server) >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the server answered fewer than {at_least} requests in {timeout_s}s")
