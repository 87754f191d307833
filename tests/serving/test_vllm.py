"""The vLLM backend against a real vLLM server on the CPU, serving a LoRA adapter of our own."""

import asyncio
import math
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
from serving.base import BackendConfigError, BackendError, Classifier, Label
from serving.prompt import chat_messages
from serving.resilience import CircuitOpen
from serving.vllm import VllmClassifier, VllmServer
from serving.vllm_answers import AnswerTokens, confidence
from tests.support.loopback import free_port
from tests.support.tiny_qwen import reviews
from tests.support.vllm_fixtures import LoraStore, own_server
from tests.support.vllm_server import VllmProcess

pytestmark = pytest.mark.slow


def sample(n: int, seed: int = 3) -> list[tuple[str, Label]]:
    rows = reviews()
    random.Random(seed).shuffle(rows)
    return [(text, Label(label)) for text, label in rows[:n]]


def models(server: VllmProcess) -> list[str]:
    return asyncio.run(VllmServer(server.base_url).models())


def word_tokens(server: VllmProcess, model: str) -> dict[Label, int]:
    """Each answer word's token, as the server's tokenizer spells the word alone."""
    tokens = {}
    for label in Label:
        body = {"model": model, "prompt": label.zh, "add_special_tokens": False}
        spelled = httpx.post(f"{server.base_url}/tokenize", json=body).json()["tokens"]
        assert len(spelled) == 1, f"{label.zh} is one token of the tiny tokenizer"
        tokens[label] = spelled[0]
    return tokens


def probability_of(label: Label, logprobs: dict[int, float], tokens: dict[Label, int]) -> float:
    p = {word: math.exp(logprobs[token]) for word, token in tokens.items()}
    return p[label] / (p[Label.POSITIVE] + p[Label.NEGATIVE])


def first_token_logprobs(server: VllmProcess, model: str, text: str) -> dict[int, float]:
    """The server's top-20 logprobs of the first answer token, asked without any constraint."""
    completion = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={
            "model": model,
            "messages": chat_messages(text),
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 20,
            "return_tokens_as_token_ids": True,
        },
        timeout=30,
    ).json()
    return {
        int(t["token"].removeprefix("token_id:")): t["logprob"]
        for t in completion["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    }


def test_every_answer_is_a_label_with_a_confidence_that_agrees_with_it(
    vllm_server: VllmProcess, lora_store: LoraStore, tiny_model: Path
):
    adapter = VllmClassifier(vllm_server.base_url, lora_store.first.model_ref, timeout_s=20)
    base = VllmClassifier(vllm_server.base_url, str(tiny_model), timeout_s=20)
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


def test_the_confidence_is_the_servers_own_probability_however_few_top_logprobs_it_lists(
    vllm_server: VllmProcess, lora_store: LoraStore
):
    # The two words' logprobs are asked for by token id (logprob_token_ids): the top-1 list
    # alone would leave the other word's probability unknown.
    name = lora_store.first.model_ref
    classifier = VllmClassifier(vllm_server.base_url, name, top_logprobs=1, timeout_s=20)
    texts = [text for text, _ in sample(12, seed=11)]
    verdicts = asyncio.run(classifier.classify(texts))
    tokens = word_tokens(vllm_server, name)
    for text, verdict in zip(texts, verdicts, strict=True):
        expected = probability_of(
            verdict.label, first_token_logprobs(vllm_server, name, text), tokens
        )
        assert verdict.confidence == pytest.approx(expected, abs=1e-4)


def test_a_server_without_logprob_token_ids_still_gives_a_confidence_from_its_top_list():
    answers = AnswerTokens.of(
        {Label.POSITIVE: "好评", Label.NEGATIVE: "差评"},
        {Label.POSITIVE: (911,), Label.NEGATIVE: (655,)},
    )

    def step(*listed: tuple[int, float]) -> list[dict[str, Any]]:
        top = [{"token": f"token_id:{token}", "logprob": logprob} for token, logprob in listed]
        return [{"token": "token_id:655", "logprob": listed[0][1], "top_logprobs": top}]

    exact = confidence(answers, Label.NEGATIVE, step((655, math.log(0.6)), (911, math.log(0.3))))
    assert exact == pytest.approx(0.6 / 0.9)
    bounded = confidence(answers, Label.NEGATIVE, step((655, math.log(0.6)), (7, math.log(0.2))))
    assert bounded == pytest.approx(0.6 / 0.8), "the other word is at most the last one listed"
    respelled = [{"token": "token_id:371", "logprob": -0.1, "top_logprobs": []}]
    assert confidence(answers, Label.NEGATIVE, respelled) is None


def test_the_probe_needs_the_server_up_and_the_adapter_served(
    vllm_server: VllmProcess, lora_store: LoraStore, tmp_path: Path
):
    name = lora_store.first.model_ref
    asyncio.run(VllmClassifier(vllm_server.base_url, name).probe())
    with pytest.raises(BackendError, match="does not serve 'no-such-adapter'"):
        asyncio.run(VllmClassifier(vllm_server.base_url, "no-such-adapter").probe())
    missing = VllmClassifier(
        vllm_server.base_url, "no-such-adapter", adapter_path=str(tmp_path / "no-such-adapter")
    )
    with pytest.raises(BackendConfigError, match="refused to load adapter 'no-such-adapter'"):
        asyncio.run(missing.probe())
    with pytest.raises(BackendError, match="unreachable"):
        asyncio.run(VllmClassifier("http://127.0.0.1:9", name, timeout_s=2).probe())


def test_an_adapter_the_server_does_not_know_is_a_backend_error(vllm_server: VllmProcess):
    classifier = VllmClassifier(vllm_server.base_url, "no-such-adapter", retries=0)
    with pytest.raises(BackendError, match="404"):
        asyncio.run(classifier.classify(["好吃"]))


def test_adapters_a_restarted_server_lost_are_loaded_again_by_the_probe_or_the_next_request(
    vllm_python_path: Path, tiny_model: Path, lora_store: LoraStore, tmp_path: Path
):
    name = lora_store.first.model_ref
    folder = str(lora_store.adapter_dir / name)
    texts = [text for text, _ in sample(40, seed=13)]
    port = free_port()
    with own_server(vllm_python_path, tiny_model, tmp_path / "first.log", port=port) as server:
        assert name not in models(server)
        classifier = VllmClassifier(server.base_url, name, adapter_path=folder, timeout_s=20)
        asyncio.run(classifier.probe())
        assert name in models(server), "the probe loaded it"
        before = asyncio.run(classifier.classify(texts))
    with own_server(vllm_python_path, tiny_model, tmp_path / "second.log", port=port) as server:
        assert name not in models(server), "a restart forgets adapters loaded at runtime"
        after = asyncio.run(classifier.classify(texts))
        assert name in models(server), "the first request found it missing and loaded it"
    assert [v.label for v in after] == [v.label for v in before]
    assert [v.confidence for v in after] == pytest.approx([v.confidence for v in before], abs=1e-4)
    assert {v.model_id for v in after} == {f"vllm:{name}"}


def test_a_hung_server_costs_seconds_then_the_breaker_refuses_at_once_until_it_answers(
    vllm_server: VllmProcess, lora_store: LoraStore, vllm_core: Core
):
    name = lora_store.first.model_ref
    version = registry.register(vllm_core.engine, backend="vllm", model_ref=name, metrics={})
    registry.promote(vllm_core.engine, version.id or 0)
    vllm = vllm_core.settings.vllm.model_copy(
        update={"timeout_s": 2.0, "retries": 2, "breaker_failures": 2, "breaker_reset_s": 4.0}
    )
    core = Core(vllm_core.settings.model_copy(update={"vllm": vllm}))
    reviews_in = [ReviewInput(text) for text, _ in sample(8, seed=17)]

    async def classify() -> tuple[float, list[Any]]:
        started = time.perf_counter()
        classified = await core.classification.classify(reviews_in, source=Source.API)
        return time.perf_counter() - started, classified

    async def scenario() -> None:
        seconds, classified = await classify()
        assert not any(c.fallback for c in classified)
        assert (await core.classification.ready()).backend == "vllm"

        vllm_server.pause()
        try:
            for _ in range(2):
                seconds, classified = await classify()
                assert all(c.fallback and c.backend == "local" for c in classified)
                print(f"hung: fell back after {seconds:.2f}s")
                assert seconds < 2.0 + 2.0, "the bounded request time, then the fallback"
            seconds, classified = await classify()
            assert all(c.fallback for c in classified)
            assert seconds < 1.0, "the breaker is open: no request waits for the server"
            assert (await core.classification.ready()).backend == "local"
            with pytest.raises(CircuitOpen):
                await core.backends.for_version(version).probe()
        finally:
            vllm_server.resume()

        await asyncio.sleep(4.0)
        seconds, classified = await classify()
        assert not any(c.fallback for c in classified), "the probe request closed the breaker"
        assert (await core.classification.ready()).backend == "vllm"

    try:
        asyncio.run(scenario())
    finally:
        core.close()


def test_a_server_killed_mid_batch_falls_back_to_the_local_model_and_loses_nothing(
    vllm_server: VllmProcess, lora_store: LoraStore, vllm_core: Core
):
    # The last test here on purpose: it kills the session's server (the next user restarts it).
    name = lora_store.first.model_ref
    version = registry.register(vllm_core.engine, backend="vllm", model_ref=name, metrics={})
    registry.promote(vllm_core.engine, version.id or 0)
    direct = VllmClassifier(vllm_server.base_url, name, retries=1, timeout_s=20)
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
