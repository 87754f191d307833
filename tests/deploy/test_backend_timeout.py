"""The active backend (Zhipu, the fake one) made to time out under load, then made fast again.

The API runs in uvicorn on a real socket, with the local model as its fallback. While Zhipu is
too slow, answers keep coming from the local model with ``fallback: true``; once the circuit
breaker opens they no longer wait for Zhipu's timeout; when Zhipu is fast again, a probe after
the breaker's reset time closes the circuit and Zhipu answers again.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from core.models import registry
from core.store.tables import ClientRole, saved_id
from core.wiring import Core
from serving.zhipu import ZhipuClassifier
from tests.fakes.zhipu_fixtures import (  # noqa: F401  (pytest fixtures)
    fake_zhipu_fixture,
    zhipu_settings,
)
from tests.fakes.zhipu_server import FakeZhipu
from tests.support.loopback import served_in_thread

TIMEOUT_S = 0.5
RESET_S = 1.5
SLOW_S = 1.5
"""How long the fake takes to answer while it is slow: well over the timeout."""
TEXTS = ["送餐太慢了，菜都凉了", "味道不错，分量足，还会再点", "一般般吧", "很快，好吃，量大"]


@dataclass(frozen=True)
class Answer:
    sent: float
    done: float
    status: int
    backend: str = ""
    version_id: int = 0
    fallback: bool = False

    @property
    def latency(self) -> float:
        return self.done - self.sent


@dataclass
class Load:
    http: httpx.AsyncClient
    answers: list[Answer] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, n: int) -> None:
        i = 0
        while not self.stopping.is_set():
            review = {"text": f"{TEXTS[i % len(TEXTS)]} #{n}-{i}"}
            sent = time.monotonic()
            response = await self.http.post("/v1/classify", json={"reviews": [review]})
            done = time.monotonic()
            if response.status_code != 200:
                self.answers.append(Answer(sent, done, response.status_code))
                continue
            (result,) = response.json()["results"]
            model = result["model"]
            self.answers.append(
                Answer(sent, done, 200, model["backend"], model["version_id"], result["fallback"])
            )
            i += 1


def metric(exposition: str, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def test_a_timing_out_backend_falls_back_fast_and_comes_back_when_it_recovers(
    core: Core, fake_zhipu: FakeZhipu
) -> None:
    quick = zhipu_settings(
        fake_zhipu,
        timeout_s=TIMEOUT_S,
        retries=0,
        breaker_failures=3,
        breaker_reset_s=RESET_S,
    )
    api = core.settings.api.model_copy(update={"rate_limit": "100000/second"})
    zhipu_core = Core(core.settings.model_copy(update={"zhipu": quick, "api": api}))
    assert zhipu_core.settings.serving.fallbacks == ["local"]
    local = saved_id(registry.active(zhipu_core.engine))
    zhipu = registry.register(
        zhipu_core.engine, backend="zhipu", model_ref="glm-4-flash", metrics={}
    )
    registry.promote(zhipu_core.engine, saved_id(zhipu))
    key = zhipu_core.clients.create("shop", ClientRole.CLIENT).key

    with served_in_thread(create_app(zhipu_core)) as base_url:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as http:
            load = Load(http)
            clients = [asyncio.create_task(load.client(n)) for n in range(8)]
            await asyncio.sleep(1.5)
            fake_zhipu.latency_s = SLOW_S
            slow = time.monotonic()
            await asyncio.sleep(3.0)
            fake_zhipu.latency_s = 0.0
            fast = time.monotonic()
            await asyncio.sleep(RESET_S + TIMEOUT_S + 2.0)
            load.stopping.set()
            await asyncio.gather(*clients)
            exposition = (await http.get("/metrics")).text
    classifier = zhipu_core.backends.for_version(zhipu)
    zhipu_core.engine.dispose()

    answers = load.answers
    assert {a.status for a in answers} == {200}, "every request is answered"
    before = [a for a in answers if a.done < slow]
    assert before and all((a.backend, a.fallback) == ("zhipu", False) for a in before)

    around_the_slowdown = [a for a in answers if a.done > slow and a.sent < slow + 1.0]
    assert max(a.latency for a in around_the_slowdown) >= TIMEOUT_S, (
        "until the circuit opens, requests wait for Zhipu's timeout"
    )
    opened = [a for a in answers if a.sent >= slow + 1.0 and a.done < fast]
    assert len(opened) > 20
    assert all((a.backend, a.version_id, a.fallback) == ("local", local, True) for a in opened)
    assert statistics.median(a.latency for a in opened) < TIMEOUT_S / 2, (
        "with the circuit open, requests do not wait for Zhipu"
    )
    assert sum(a.latency < TIMEOUT_S for a in opened) >= 0.8 * len(opened)

    closed_at = min(a.done for a in answers if a.sent >= fast and not a.fallback)
    assert closed_at - fast < RESET_S + TIMEOUT_S + 1.0
    after = [a for a in answers if a.sent >= closed_at + 0.3]
    assert len(after) > 20
    assert all((a.backend, a.version_id, a.fallback) == ("zhipu", zhipu.id, False) for a in after)
    assert isinstance(classifier, ZhipuClassifier) and not classifier.breaker.is_open

    fell_back = sum(a.fallback for a in answers)
    assert metric(exposition, "waimai_fallbacks_total", backend="local") == fell_back
    assert metric(exposition, "waimai_backend_errors_total", backend="zhipu") >= 1
    zhipu_answers = metric(exposition, "waimai_predictions_total", backend="zhipu")
    assert zhipu_answers == sum(a.backend == "zhipu" for a in answers)
