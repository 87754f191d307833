"""The vLLM backend on models with other families' quirks, each on a real vLLM server of its own:
a generation_config.json with sampling defaults, and GLM-4's chat template."""

import asyncio
import math
from pathlib import Path

import httpx
import pytest

from serving.base import Label
from serving.prompt import chat_messages
from serving.vllm import VllmClassifier
from tests.support.tiny_qwen import reviews
from tests.support.vllm_fixtures import own_server
from tests.support.vllm_server import VllmProcess

pytestmark = pytest.mark.slow


def reviews_naming_a_label(limit: int = 400) -> list[str]:
    return [text for text, _ in reviews() if "好评" in text or "差评" in text][:limit]


async def greedy_answers(
    server: VllmProcess, model: str, texts: list[str], **sampling: float
) -> list[str]:
    """The constrained greedy answers, with ``sampling`` parameters and none other."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        slots = asyncio.Semaphore(16)

        async def one(text: str) -> str:
            body = {
                "model": model,
                "messages": chat_messages(text),
                "temperature": 0,
                "max_tokens": 2,
                "structured_outputs": {"choice": ["好评", "差评"]},
                **sampling,
            }
            async with slots:
                answer = (await client.post("/v1/chat/completions", json=body)).json()
            return str(answer["choices"][0]["message"]["content"])

        return await asyncio.gather(*(one(text) for text in texts))


def test_the_models_sampling_defaults_never_decide_the_answer(
    vllm_python_path: Path, sampling_defaults_model: Path, tmp_path: Path
):
    model = str(sampling_defaults_model)
    texts = reviews_naming_a_label()
    # Started as vLLM starts by default (--generation-config auto): the model's
    # repetition_penalty 1.1 applies to every request that does not say otherwise.
    with own_server(vllm_python_path, sampling_defaults_model, tmp_path / "vllm.log") as server:
        assert "overridden by the model's `generation_config.json`" in server.log_tail(400)
        penalised = asyncio.run(greedy_answers(server, model, texts))
        unpenalised = asyncio.run(greedy_answers(server, model, texts, repetition_penalty=1.0))
        verdicts = asyncio.run(VllmClassifier(server.base_url, model, timeout_s=20).classify(texts))

    changed = sum(a != b for a, b in zip(penalised, unpenalised, strict=True))
    print(f"the penalty changes {changed} of {len(texts)} answers")
    assert changed > 0, "the server's defaults do change answers here"
    assert [v.label.zh for v in verdicts] == unpenalised
    for verdict in verdicts:
        assert verdict.confidence is not None
        assert verdict.confidence >= 0.5, "the answer is the word the model finds more probable"


def test_a_template_that_puts_a_newline_before_the_answer_still_gives_confidences(
    vllm_python_path: Path, glm_style_model: Path, tmp_path: Path
):
    model = str(glm_style_model)
    texts = [text for text, _ in reviews()[:200:4]]
    with own_server(vllm_python_path, glm_style_model, tmp_path / "vllm.log") as server:
        verdicts = asyncio.run(VllmClassifier(server.base_url, model, timeout_s=20).classify(texts))
        expected = probability_after_the_newline(server, model, texts[0], verdicts[0].label)

    assert all(v.confidence is not None and v.confidence >= 0.5 for v in verdicts)
    assert len({round(v.confidence or 0, 3) for v in verdicts}) > 10, "real, varying probabilities"
    assert verdicts[0].confidence == pytest.approx(expected, abs=1e-4)


def probability_after_the_newline(
    server: VllmProcess, model: str, text: str, label: Label
) -> float:
    """p(label) / (p(好评) + p(差评)) for the token after the template's "\\n", as the server
    computes it for the rendered prompt with that newline appended."""

    def tokenize(body: dict[str, object]) -> list[int]:
        answer = httpx.post(f"{server.base_url}/tokenize", json={"model": model, **body}).json()
        return [int(token) for token in answer["tokens"]]

    messages = chat_messages(text)
    prompt = tokenize({"messages": messages, "add_special_tokens": False})
    answered = {
        word: tokenize(
            {
                "messages": [*messages, {"role": "assistant", "content": word.zh}],
                "add_generation_prompt": False,
                "continue_final_message": True,
                "add_special_tokens": False,
            }
        )[len(prompt) :]
        for word in Label
    }
    newline = tokenize({"prompt": "\n", "add_special_tokens": False})
    assert all(ids[:-1] == newline for ids in answered.values()), answered
    completion = httpx.post(
        f"{server.base_url}/v1/completions",
        json={
            "model": model,
            "prompt": prompt + newline,
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": 20,
            "return_tokens_as_token_ids": True,
        },
        timeout=30,
    ).json()
    top = completion["choices"][0]["logprobs"]["top_logprobs"][0]
    p = {word: math.exp(top[f"token_id:{ids[-1]}"]) for word, ids in answered.items()}
    return p[label] / (p[Label.POSITIVE] + p[Label.NEGATIVE])
