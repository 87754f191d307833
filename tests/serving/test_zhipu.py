"""The Zhipu backend through the real zhipuai SDK against the fake Zhipu on loopback."""

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
import zhipuai
from sqlmodel import Session, select

from core.classify.service import ReviewInput
from core.models import registry
from core.store.tables import Notification, Source
from core.wiring import Core
from serving.base import Answer, BackendConfigError, BackendError, Declined, Label, Verdict
from serving.prompt import chat_messages
from serving.resilience import CircuitOpen
from serving.zhipu import ZhipuClassifier, accepts_thinking
from serving.zhipu_replies import AccountPaused, reset_time
from tests.fakes.zhipu_errors import quota_message
from tests.fakes.zhipu_fixtures import (  # noqa: F401  (pytest fixtures)
    fake_zhipu_fixture,
    small_store_fixture,
    zhipu_core_fixture,
    zhipu_settings,
)
from tests.fakes.zhipu_server import FILTERED_INPUT, WITHHELD_ANSWER, FakeZhipu, Fault

REVIEWS = ["太难吃了，送得又慢", "好吃，还会再来", "味道不错，送餐很快"]


def classifier(fake: FakeZhipu, model: str = "glm-4-flash", **options) -> ZhipuClassifier:
    quick = {"timeout_s": 0.5, "retries": 2, "backoff_initial_s": 0.01, "backoff_max_s": 0.02}
    return ZhipuClassifier(fake.api_key, model, base_url=fake.base_url, **quick | options)


def verdicts_in(answers: Sequence[Answer]) -> list[Verdict]:
    """The answers, each of which must be a verdict (none declined)."""
    assert all(isinstance(answer, Verdict) for answer in answers), answers
    return [answer for answer in answers if isinstance(answer, Verdict)]


def labels(answers: Sequence[Answer]) -> list[Label]:
    return [verdict.label for verdict in verdicts_in(answers)]


def probed_again_in(error: pytest.ExceptionInfo[CircuitOpen]) -> float:
    found = re.search(r"probed again in ([\d.]+)s", str(error.value))
    assert found, str(error.value)
    return float(found[1])


async def test_reviews_are_sent_as_the_training_prompt_and_answered_in_order(fake_zhipu):
    verdicts = verdicts_in(await classifier(fake_zhipu).classify(REVIEWS))
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
    assert labels(await classifier(fake_zhipu).classify(["随便"])) == [label]


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
    alerts: list[str] = []
    wrong = classifier(fake_zhipu, breaker_reset_s=0.6, on_alert=alerts.append)
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
    assert len([r for r in caplog.records if "cannot answer" in r.message]) == 1
    assert len(alerts) == 1 and "ZHIPU__API_KEY" in alerts[0]
    assert isinstance(wrong.refusal, BackendConfigError)


@pytest.mark.parametrize(
    ("status", "code"), [(429, "1302"), (429, "1303"), (429, "1305"), (500, "500"), (503, "1305")]
)
async def test_throttling_and_server_errors_are_retried_with_backoff(fake_zhipu, status, code):
    fake_zhipu.inject(Fault.error(status, code, count=2))
    answers = await classifier(fake_zhipu, retries=2).classify(["好吃"])
    assert labels(answers) == [Label.POSITIVE]
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
    assert labels(await fast.classify(["好吃"])) == [Label.POSITIVE]
    fake_zhipu.inject(Fault(kind="hang", seconds=1.0, count=None))
    with pytest.raises(BackendError, match=r"did not answer within 0\.3s"):
        await fast.classify(["好吃"])


async def test_a_slow_answer_within_the_timeout_is_fine(fake_zhipu):
    fake_zhipu.inject(Fault(kind="slow", seconds=0.2, count=None))
    answers = await classifier(fake_zhipu, timeout_s=1.0).classify(["难吃"])
    assert labels(answers) == [Label.NEGATIVE]


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
    assert labels(await breaking.classify(["好吃"])) == [Label.POSITIVE]
    assert not breaking.breaker.is_open


async def test_a_whole_batch_waits_for_the_probe_and_then_goes(fake_zhipu):
    breaking = classifier(fake_zhipu, retries=0, breaker_failures=1, breaker_reset_s=0.3)
    fake_zhipu.inject(Fault.error(503, "1305"))
    with pytest.raises(BackendError, match="503"):
        await breaking.classify(REVIEWS)
    await asyncio.sleep(0.35)
    assert len(await breaking.classify(REVIEWS)) == 3
    assert not breaking.breaker.is_open


async def test_a_refusal_of_one_request_does_not_count_towards_the_breaker(fake_zhipu):
    picky = classifier(fake_zhipu, retries=0, breaker_failures=2)
    fake_zhipu.inject(Fault.error(400, "1214", count=3))
    for _ in range(3):
        with pytest.raises(BackendError, match="1214"):
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


# Quotas, locked accounts, a model we cannot use: wait or call a person, never retry as throttling.


def test_the_reset_time_in_zhipus_quota_message_is_read_as_beijing_time():
    message = "已达到 5 小时的使用上限。您的限额将在 2025-12-09 18:08:11 重置。"
    assert reset_time(message) == datetime(2025, 12, 9, 10, 8, 11, tzinfo=UTC).timestamp()
    assert reset_time(
        "Usage limit reached for 5 hour. Your limit will reset at 2025-12-09 18:08:11"
    )
    assert reset_time("该 API 已达今日调用次数限额，如有更多需求，请联系客服购买。") is None


@pytest.mark.parametrize("code", ["1308", "1310"])
async def test_a_used_up_quota_stops_calls_until_the_stated_reset_and_alerts_once(fake_zhipu, code):
    alerts: list[str] = []
    quota = classifier(fake_zhipu, retries=3, on_alert=alerts.append)
    resets_at = time.time() + 3 * 3600
    fake_zhipu.inject(Fault.error(429, code, count=None, message=quota_message(code, resets_at)))
    with pytest.raises(AccountPaused, match=code) as paused:
        await quota.classify(REVIEWS)
    assert paused.value.resets_at == pytest.approx(resets_at, abs=1)
    assert fake_zhipu.refusals[429] == 1, "a 429 that is a quota is not retried as throttling"

    for _ in range(3):
        with pytest.raises(CircuitOpen, match=code) as refused:
            await quota.classify(REVIEWS)
    assert 3 * 3600 - 60 < probed_again_in(refused) <= 3 * 3600
    with pytest.raises(AccountPaused):
        quota.raise_if_refused()
    with pytest.raises(AccountPaused):
        await quota.probe()
    assert fake_zhipu.refusals[429] == 1, "nothing is sent before the reset"
    assert len(alerts) == 1 and "zhipu:glm-4-flash" in alerts[0] and "3.0 h" in alerts[0]


@pytest.mark.parametrize("code", ["1304", "1112", "1121"])
async def test_a_quota_or_locked_account_without_a_reset_time_pauses_for_the_set_period(
    fake_zhipu, code
):
    alerts: list[str] = []
    paused = classifier(
        fake_zhipu, account_pause_s=0.4, breaker_reset_s=0.1, on_alert=alerts.append
    )
    fake_zhipu.inject(Fault.error(429, code, count=None))
    for _ in range(2):
        with pytest.raises(AccountPaused, match=code):
            await paused.classify(["好吃"])
        with pytest.raises(CircuitOpen) as refused:
            await paused.classify(["好吃"])
        assert 0.3 < probed_again_in(refused) <= 0.4, "the account's pause, not the breaker's"
        await asyncio.sleep(0.45)  # the probe fails again: the same outage
    assert fake_zhipu.refusals[429] == 2 and len(alerts) == 1

    fake_zhipu.faults.clear()
    assert labels(await paused.classify(REVIEWS)) == [
        Label.NEGATIVE, Label.POSITIVE, Label.POSITIVE
    ]  # fmt: skip
    await paused.probe()
    assert paused.refusal is None

    fake_zhipu.inject(Fault.error(429, code))
    with pytest.raises(AccountPaused):
        await paused.classify(["好吃"])
    assert len(alerts) == 2, "a new outage is news again"


async def test_a_quota_whose_stated_reset_has_passed_is_probed_after_the_breaker_period(
    fake_zhipu,
):
    stale = classifier(fake_zhipu, breaker_reset_s=0.2, account_pause_s=3600)
    message = quota_message("1308", time.time() - 60)
    fake_zhipu.inject(Fault.error(429, "1308", message=message))
    with pytest.raises(AccountPaused):
        await stale.classify(["好吃"])
    with pytest.raises(CircuitOpen) as refused:
        await stale.classify(["好吃"])
    assert probed_again_in(refused) <= 0.2
    await asyncio.sleep(0.25)
    assert labels(await stale.classify(["好吃"])) == [Label.POSITIVE]


@pytest.mark.parametrize(
    ("model", "status", "code"), [("glm-4-nonexistent", 400, "1211"), ("glm-4-plus", 403, "1220")]
)
async def test_a_model_zhipu_lacks_or_withholds_makes_the_classifier_unusable_not_a_round_trip(
    fake_zhipu, model, status, code
):
    fake_zhipu.inaccessible_models.add("glm-4-plus")
    alerts: list[str] = []
    unusable = classifier(fake_zhipu, model, retries=3, on_alert=alerts.append)
    with pytest.raises(BackendConfigError, match=rf"{code}.*{model}"):
        await unusable.classify(REVIEWS)
    for _ in range(3):
        with pytest.raises(CircuitOpen, match=code):
            await unusable.classify(REVIEWS)
    with pytest.raises(BackendConfigError, match=model):
        unusable.raise_if_refused()
    with pytest.raises(BackendConfigError, match=model):
        await unusable.probe()
    assert fake_zhipu.refusals[status] == 1, "one round trip, not one per review"
    assert len(alerts) == 1 and model in alerts[0]


# The content filter: one review declined, the rest of its batch stands.


@pytest.mark.parametrize("trigger", [FILTERED_INPUT, WITHHELD_ANSWER], ids=["1301", "sensitive"])
async def test_a_review_the_content_filter_refuses_is_declined_alone_and_the_batch_stands(
    fake_zhipu, trigger
):
    alerts: list[str] = []
    picky = classifier(fake_zhipu, retries=3, breaker_failures=1, on_alert=alerts.append)
    texts = [REVIEWS[0], f"{trigger}好吃", REVIEWS[1]]
    for _ in range(3):
        first, declined, last = await picky.classify(texts)
        assert isinstance(first, Verdict) and first.label == Label.NEGATIVE
        assert isinstance(last, Verdict) and last.label == Label.POSITIVE
        assert isinstance(declined, Declined) and "content filter" in declined.reason
        assert declined.model_id == "zhipu:glm-4-flash"
    assert not picky.breaker.is_open and picky.refusal is None and not alerts
    assert fake_zhipu.refusals[400] == (3 if trigger == FILTERED_INPUT else 0), "never retried"


# Reasoning models: told not to think, and an answer cut at max_tokens is an error.


@pytest.mark.parametrize(
    ("model", "takes_it"),
    [
        ("glm-4.5", True),
        ("glm-4.5-air", True),
        ("GLM-4.6", True),
        ("glm-4.7", True),
        ("glm-5", True),
        ("glm-4-flash", False),
        ("glm-4", False),
        ("glm-4-flash:1601347751:waimai:8d2c5f1e", False),
        ("glm-z1-air", False),
        ("glm-4.1v-thinking-flash", False),
        ("chatglm3-6b-8572905046912426020-demo_test", False),
    ],
)
def test_models_from_glm_4_5_on_take_the_thinking_switch(model, takes_it):
    assert accepts_thinking(model) is takes_it


@pytest.mark.parametrize("model", ["glm-4.5-air", "glm-4.6", "glm-4.7"])
async def test_a_reasoning_model_is_told_not_to_think_so_eight_tokens_hold_the_answer(
    fake_zhipu, model
):
    verdicts = await classifier(fake_zhipu, model).classify(REVIEWS)
    assert labels(verdicts) == [Label.NEGATIVE, Label.POSITIVE, Label.POSITIVE]
    assert fake_zhipu.last_chat["thinking"] == {"type": "disabled"}
    assert fake_zhipu.last_chat["max_tokens"] <= 8


async def test_a_model_before_glm_4_5_is_not_sent_the_thinking_switch(fake_zhipu):
    await classifier(fake_zhipu).classify(["好吃"])
    assert fake_zhipu.last_chat.get("thinking") is None


async def test_an_answer_a_thinking_model_cut_off_is_an_error_naming_what_came_back(fake_zhipu):
    thinking = classifier(fake_zhipu, "glm-4.6", disable_thinking=False)
    with pytest.raises(BackendError, match="finish_reason length") as raised:
        await thinking.classify(["好吃"])
    assert "content ''" in str(raised.value) and "reasoning '嗯，用户" in str(raised.value)
    assert "ZHIPU__DISABLE_THINKING" in str(raised.value)
    assert fake_zhipu.answered["好吃"] == 1, "a cut answer is not asked again"


async def test_a_long_answer_cut_at_max_tokens_is_an_error_not_a_label(fake_zhipu):
    fake_zhipu.inject(Fault(kind="answer", answer="好评，因为评论说饭菜好吃而且送得快"))
    with pytest.raises(BackendError, match=r"finish_reason length.*content '好评，因为"):
        await classifier(fake_zhipu).classify(["好吃"])


def active_zhipu(core: Core, model: str = "glm-4-flash") -> None:
    version = registry.register(core.engine, backend="zhipu", model_ref=model, metrics={})
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
    assert (await core.classification.ready()).backend == "zhipu"
    fake_zhipu.inject(Fault.error(401, "1002", count=None))
    assert (await classify(core)).backend == "local"
    assert (await core.classification.ready()).backend == "local"
    assert (await classify(core)).backend == "local"
    assert fake_zhipu.refusals[401] == 1

    fake_zhipu.faults.clear()
    await asyncio.sleep(0.65)
    assert (await core.classification.ready()).backend == "zhipu"
    assert (await classify(core)).backend == "zhipu"


async def test_a_model_zhipu_lacks_is_not_ready_and_costs_one_request_not_one_per_review(
    zhipu_core, fake_zhipu
):
    active_zhipu(zhipu_core, "glm-4-nonexistent")
    assert (await classify(zhipu_core)).backend == "local"
    assert (await zhipu_core.classification.ready()).backend == "local"
    for text in REVIEWS:
        result = await classify(zhipu_core, text)
        assert (result.backend, result.fallback) == ("local", True)
    assert fake_zhipu.refusals[400] == 1
    assert await admins_told(zhipu_core) == 1


async def test_a_used_up_quota_tells_the_admins_once_through_the_outbox(zhipu_core, fake_zhipu):
    active_zhipu(zhipu_core)
    fake_zhipu.inject(Fault.error(429, "1308", count=None))
    for text in REVIEWS:
        assert (await classify(zhipu_core, text)).backend == "local"
    assert (await zhipu_core.classification.ready()).backend == "local"
    assert fake_zhipu.refusals[429] == 1
    assert await admins_told(zhipu_core) == 1


async def test_a_filtered_review_falls_back_alone_and_its_batch_stays_with_zhipu(
    zhipu_core, fake_zhipu
):
    active_zhipu(zhipu_core)
    items = [ReviewInput(REVIEWS[0]), ReviewInput(f"{FILTERED_INPUT}好吃"), ReviewInput(REVIEWS[1])]
    results = await zhipu_core.classification.classify(items, source=Source.API)
    served = [(result.backend, result.fallback) for result in results]
    assert served == [("zhipu", False), ("local", True), ("zhipu", False)]
    assert (await zhipu_core.classification.ready()).backend == "zhipu"


async def admins_told(core: Core) -> int:
    """The backend alerts in the outbox, once those being published have landed."""
    await asyncio.gather(*core.backends._alerts)
    with Session(core.engine) as session:
        stored = session.exec(select(Notification)).all()
    return len([n for n in stored if n.kind == "BackendAlert"])
