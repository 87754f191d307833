"""The Zhipu backend through the real zhipuai SDK against the fake Zhipu on loopback."""

import asyncio
import logging
import time

import pytest
import zhipuai

from core.classify.service import ReviewInput
from core.models import registry
from core.store.tables import Source
from core.wiring import Core
from serving.base import BackendConfigError, BackendError, Label
from serving.prompt import chat_messages
from serving.resilience import CircuitOpen
from serving.zhipu import ZhipuClassifier
from tests.fakes.zhipu_fixtures import (  # noqa: F401  (pytest fixtures)
    fake_zhipu_fixture,
    small_store_fixture,
    zhipu_core_fixture,
    zhipu_settings,
)
from tests.fakes.zhipu_server import FakeZhipu, Fault

REVIEWS = ["太难吃了，送得又慢", "好吃，还会再来", "味道不错，送餐很快"]


def classifier(fake: FakeZhipu, **options) -> ZhipuClassifier:
    quick = {"timeout_s": 0.5, "retries": 2, "backoff_initial_s": 0.01, "backoff_max_s": 0.02}
    return ZhipuClassifier(fake.api_key, "glm-4-flash", base_url=fake.base_url, **quick | options)


async def test_reviews_are_sent_as_the_training_prompt_and_answered_in_order(fake_zhipu):
    verdicts = await classifier(fake_zhipu).classify(REVIEWS)
    assert [v.label for v in verdicts] == [Label.NEGATIVE, Label.POSITIVE, Label.POSITIVE]
    assert {v.confidence for v in verdicts} == {None}
    assert {v.model_id for v in verdicts} == {"zhipu:glm-4-flash"}
    sent = fake_zhipu.last_chat
    assert sent["messages"] in [chat_messages(review) for review in REVIEWS]
    assert sent["messages"][0]["content"] == "你是一位外卖评论好评差评评论专家。"
    assert sent["model"] == "glm-4-flash"
    assert sent["do_sample"] is False
    assert sent["max_tokens"] <= 8


@pytest.mark.parametrize(
    ("answer", "label"),
    [("好评", Label.POSITIVE), ("差评。", Label.NEGATIVE), ("这条评论是差评", Label.NEGATIVE)],
)
async def test_an_answer_holding_exactly_one_label_is_read(fake_zhipu, answer, label):
    fake_zhipu.inject(Fault(kind="answer", answer=answer))
    assert (await classifier(fake_zhipu).classify(["随便"]))[0].label == label


@pytest.mark.parametrize("answer", ["好评还是差评？", "我无法判断", "", "positive"])
async def test_any_other_answer_is_an_error_naming_it_not_a_guess(fake_zhipu, answer):
    fake_zhipu.inject(Fault(kind="answer", answer=answer))
    with pytest.raises(BackendError, match="not a label") as raised:
        await classifier(fake_zhipu).classify(["随便"])
    assert repr(answer) in str(raised.value)
    assert fake_zhipu.answered["随便"] == 1, "an unreadable answer is not asked again"


def test_the_fake_takes_the_sdks_jwt_form_and_refuses_a_wrong_key(fake_zhipu):
    def ask(key: str, jwt: bool) -> str:
        client = zhipuai.ZhipuAI(
            api_key=key, base_url=fake_zhipu.base_url, max_retries=0, disable_token_cache=not jwt
        )
        completion = client.chat.completions.create(
            model="glm-4-flash", messages=chat_messages("好吃"), do_sample=False
        )
        return str(completion.choices[0].message.content)

    assert ask(fake_zhipu.api_key, jwt=True) == "好评"
    with pytest.raises(zhipuai.APIAuthenticationError):
        ask("fakeid.wrongsecret", jwt=True)
    with pytest.raises(zhipuai.APIAuthenticationError):
        ask("wrong-key", jwt=False)


async def test_a_refused_key_is_a_config_error_not_retried_and_logged_once(fake_zhipu, caplog):
    wrong = classifier(fake_zhipu, breaker_reset_s=0.6)
    fake_zhipu.inject(Fault.error(401, "1002", count=None))
    with caplog.at_level(logging.ERROR, logger="serving.zhipu"):
        with pytest.raises(BackendConfigError, match=r"401.*ZHIPU__API_KEY"):
            await wrong.classify(["好吃"])
        with pytest.raises(CircuitOpen, match="401"):
            await wrong.classify(REVIEWS)
        assert fake_zhipu.refusals[401] == 1, "not retried, and not asked again at once"
        await asyncio.sleep(0.65)
        with pytest.raises(BackendConfigError):
            await wrong.classify(REVIEWS)
    assert fake_zhipu.refusals[401] == 2, "one probe, with one review"
    assert len([r for r in caplog.records if "misconfigured" in r.message]) == 1
    assert wrong.config_error is not None


@pytest.mark.parametrize(
    ("status", "code"), [(429, "1302"), (429, "1303"), (429, "1305"), (500, "500"), (503, "1305")]
)
async def test_throttling_and_server_errors_are_retried_with_backoff(fake_zhipu, status, code):
    fake_zhipu.inject(Fault.error(status, code, count=2))
    verdicts = await classifier(fake_zhipu, retries=2).classify(["好吃"])
    assert verdicts[0].label == Label.POSITIVE
    assert fake_zhipu.refusals[status] == 2


@pytest.mark.parametrize(("status", "code"), [(429, "1302"), (500, "500"), (503, "1305")])
async def test_retries_are_bounded_then_it_is_a_backend_error(fake_zhipu, status, code):
    fake_zhipu.inject(Fault.error(status, code, count=None))
    with pytest.raises(BackendError, match=f"gave up after 3 attempts.*{status}"):
        await classifier(fake_zhipu, retries=2).classify(["好吃"])
    assert fake_zhipu.refusals[status] == 3, "ours only: the SDK's own retries are off"


@pytest.mark.parametrize(
    ("status", "code", "error", "says"),
    [
        (429, "1113", BackendConfigError, "no balance"),
        (400, "1301", BackendError, "content filter"),
        (400, "1214", BackendError, "400"),
    ],
)
async def test_errors_that_a_retry_cannot_fix_are_not_retried(
    fake_zhipu, status, code, error, says
):
    fake_zhipu.inject(Fault.error(status, code, count=None))
    with pytest.raises(error, match=says):
        await classifier(fake_zhipu, retries=3).classify(["好吃"])
    assert fake_zhipu.refusals[status] == 1


async def test_a_timeout_is_retried_and_then_given_up(fake_zhipu):
    fake_zhipu.inject(Fault(kind="hang", seconds=1.0, count=1))
    fast = classifier(fake_zhipu, timeout_s=0.3, retries=1)
    assert (await fast.classify(["好吃"]))[0].label == Label.POSITIVE
    fake_zhipu.inject(Fault(kind="hang", seconds=1.0, count=None))
    with pytest.raises(BackendError, match=r"did not answer within 0\.3s"):
        await fast.classify(["好吃"])


async def test_a_slow_answer_within_the_timeout_is_fine(fake_zhipu):
    fake_zhipu.inject(Fault(kind="slow", seconds=0.2, count=None))
    assert (await classifier(fake_zhipu, timeout_s=1.0).classify(["难吃"]))[0].label == (
        Label.NEGATIVE
    )


async def test_the_breaker_opens_on_a_dead_backend_and_a_probe_closes_it(fake_zhipu):
    breaking = classifier(fake_zhipu, retries=0, breaker_failures=3, breaker_reset_s=0.6)
    fake_zhipu.inject(Fault.error(500, "500", count=None))
    for _ in range(3):
        with pytest.raises(BackendError, match="500"):
            await breaking.classify(["好吃"])
    with pytest.raises(CircuitOpen, match="probed again in"):
        await breaking.classify(["好吃"])
    assert fake_zhipu.refusals[500] == 3, "an open circuit sends nothing"

    await asyncio.sleep(0.65)
    with pytest.raises(BackendError, match="500"):
        await breaking.classify(["好吃"])  # the probe fails: open again
    assert fake_zhipu.refusals[500] == 4
    with pytest.raises(CircuitOpen):
        await breaking.classify(["好吃"])

    fake_zhipu.faults.clear()
    await asyncio.sleep(0.65)
    assert (await breaking.classify(["好吃"]))[0].label == Label.POSITIVE
    assert not breaking.breaker.is_open


async def test_a_whole_batch_waits_for_the_probe_and_then_goes(fake_zhipu):
    breaking = classifier(fake_zhipu, retries=0, breaker_failures=1, breaker_reset_s=0.3)
    fake_zhipu.inject(Fault.error(503, "1305"))
    with pytest.raises(BackendError, match="503"):
        await breaking.classify(REVIEWS)
    await asyncio.sleep(0.35)
    assert len(await breaking.classify(REVIEWS)) == 3
    assert not breaking.breaker.is_open


async def test_a_refusal_does_not_count_towards_the_breaker(fake_zhipu):
    picky = classifier(fake_zhipu, retries=0, breaker_failures=2)
    fake_zhipu.inject(Fault.error(400, "1301", count=3))
    for _ in range(3):
        with pytest.raises(BackendError, match="content filter"):
            await picky.classify(["好吃"])
    assert not picky.breaker.is_open


async def test_requests_go_out_concurrently_up_to_the_limit(fake_zhipu):
    fake_zhipu.latency_s = 0.05
    fake_zhipu.max_concurrency = 4
    texts = [f"第{i}条：好吃" for i in range(40)]
    verdicts = await classifier(fake_zhipu, max_concurrency=4).classify(texts)
    assert len(verdicts) == 40
    assert fake_zhipu.max_in_flight == 4, "four at once, not one after the other"
    assert fake_zhipu.refusals[429] == 0, "never more in flight than the limit"


async def test_requests_start_no_faster_than_the_rate_limit(fake_zhipu):
    started = time.perf_counter()
    await classifier(fake_zhipu, max_rps=20).classify([f"第{i}条" for i in range(6)])
    assert time.perf_counter() - started >= 5 / 20 * 0.9


async def test_one_unreadable_answer_fails_the_whole_batch(fake_zhipu):
    fake_zhipu.inject(Fault(kind="answer", answer="不知道"))
    with pytest.raises(BackendError, match="not a label"):
        await classifier(fake_zhipu).classify(REVIEWS)


def test_a_classifier_serves_successive_event_loops(fake_zhipu):
    shared = classifier(fake_zhipu)
    for _ in range(2):
        assert len(asyncio.run(shared.classify(REVIEWS))) == 3


def active_zhipu(core: Core) -> None:
    version = registry.register(core.engine, backend="zhipu", model_ref="glm-4-flash", metrics={})
    registry.promote(core.engine, version.id or 0)


async def classify(core: Core, text: str = "送餐太慢，菜都凉了"):
    (result,) = await core.classification.classify([ReviewInput(text)], source=Source.API)
    return result


async def test_the_service_classifies_through_zhipu(zhipu_core, fake_zhipu):
    active_zhipu(zhipu_core)
    result = await classify(zhipu_core)
    assert (result.backend, result.fallback) == ("zhipu", False)
    assert result.verdict.label == Label.NEGATIVE
    assert result.verdict.confidence is None


@pytest.mark.parametrize(
    "fault",
    [
        Fault.error(401, "1002", count=None),
        Fault.error(429, "1302", count=None),
        Fault.error(429, "1305", count=None),
        Fault.error(429, "1113", count=None),
        Fault.error(500, "500", count=None),
        Fault.error(503, "1305", count=None),
        Fault.error(400, "1301", count=None),
        Fault(kind="hang", seconds=1.0, count=None),
        Fault(kind="answer", answer="我是一个AI助手", count=None),
    ],
    ids=["401", "1302", "1305", "1113", "500", "503", "1301", "timeout", "not-a-label"],
)
async def test_each_fault_falls_back_to_the_local_model(zhipu_core, fake_zhipu, fault):
    impatient = zhipu_settings(fake_zhipu, timeout_s=0.5)
    core = Core(zhipu_core.settings.model_copy(update={"zhipu": impatient}))
    active_zhipu(core)
    fake_zhipu.inject(fault)
    result = await classify(core)
    assert (result.backend, result.fallback) == ("local", True)
    assert result.verdict.label in (Label.POSITIVE, Label.NEGATIVE)


async def test_without_an_api_key_a_zhipu_version_falls_back(zhipu_core, fake_zhipu):
    settings = zhipu_core.settings.model_copy(
        update={"zhipu": zhipu_settings(fake_zhipu, api_key=None)}
    )
    core = Core(settings)
    active_zhipu(core)
    result = await classify(core)
    assert (result.backend, result.fallback) == ("local", True)
    assert not fake_zhipu.answered


async def test_a_refused_key_makes_the_zhipu_version_not_ready_until_its_probe(
    zhipu_core, fake_zhipu
):
    core = Core(
        zhipu_core.settings.model_copy(
            update={"zhipu": zhipu_settings(fake_zhipu, breaker_reset_s=0.6)}
        )
    )
    active_zhipu(core)
    assert core.classification.ready().backend == "zhipu"
    fake_zhipu.inject(Fault.error(401, "1002", count=None))
    assert (await classify(core)).backend == "local"
    assert core.classification.ready().backend == "local"
    assert (await classify(core)).backend == "local"
    assert fake_zhipu.refusals[401] == 1

    fake_zhipu.faults.clear()
    await asyncio.sleep(0.65)
    assert core.classification.ready().backend == "zhipu"
    assert (await classify(core)).backend == "zhipu"
