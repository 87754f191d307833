"""The holdout through Zhipu's Batch API: the real zhipuai SDK against the fake Zhipu's batches."""

import asyncio
from collections.abc import Sequence

import pytest

from core.models.evaluation import classify_all
from serving.base import Answer, BackendError, Declined, Label, Verdict
from serving.zhipu import ZhipuClassifier
from tests.fakes.zhipu_fixtures import fake_zhipu_fixture  # noqa: F401  (pytest fixture)
from tests.fakes.zhipu_server import FILTERED_INPUT, WITHHELD_ANSWER, FakeZhipu, keyword_rule

REVIEWS = [
    f"第{i}单{text}"
    for i in range(40)
    for text in ("太难吃了，送得又慢", "好吃，还会再来", "味道不错，送餐很快", "菜凉了，很失望")
]


def classifier(fake: FakeZhipu, model: str = "glm-4-flash") -> ZhipuClassifier:
    return ZhipuClassifier(
        fake.api_key,
        model,
        base_url=fake.base_url,
        timeout_s=2.0,
        retries=1,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
    )


def one_by_one(fake: FakeZhipu) -> int:
    """Chat requests the fake answered outside batches."""
    return sum(fake.answered.values()) - fake.batch.answered


def labels(answers: Sequence[Answer]) -> list[Label | None]:
    return [answer.label if isinstance(answer, Verdict) else None for answer in answers]


async def test_many_reviews_go_as_one_batch_and_are_answered_as_requests_are(fake_zhipu):
    reviews = [*REVIEWS, f"{FILTERED_INPUT}好吃", f"{WITHHELD_ANSWER}好吃"]
    done: list[int] = []
    answers = await classifier(fake_zhipu).classify_bulk(reviews, done.append)

    (batch,) = fake_zhipu.batch.batches.values()
    assert [line["body"]["messages"][-1]["content"] for line in batch.requests] == reviews
    assert {line["body"]["max_tokens"] for line in batch.requests} == {8}
    assert one_by_one(fake_zhipu) == 0, "no review was asked alone"
    assert sum(done) == len(reviews), "progress counts every review once"
    assert labels(answers[: len(REVIEWS)]) == [Label.from_zh(keyword_rule(r)) for r in REVIEWS]
    assert [type(a) for a in answers[len(REVIEWS) :]] == [Declined, Declined]
    assert {a.model_id for a in answers} == {"zhipu:glm-4-flash"}

    asked = await classifier(fake_zhipu).classify(REVIEWS)
    assert labels(asked) == labels(answers[: len(REVIEWS)]), "the same answers one by one"


async def test_the_lines_a_batch_did_not_answer_are_asked_one_by_one(fake_zhipu):
    fake_zhipu.batch.failing_lines = 3
    answers = await classifier(fake_zhipu).classify_bulk(REVIEWS)
    assert labels(answers) == [Label.from_zh(keyword_rule(r)) for r in REVIEWS]
    assert one_by_one(fake_zhipu) == 3


async def test_an_expired_batch_keeps_what_it_answered_and_the_rest_go_one_by_one(fake_zhipu):
    fake_zhipu.batch.expire_after = 100
    answers = await classifier(fake_zhipu).classify_bulk(REVIEWS)
    assert labels(answers) == [Label.from_zh(keyword_rule(r)) for r in REVIEWS]
    assert (fake_zhipu.batch.answered, one_by_one(fake_zhipu)) == (100, len(REVIEWS) - 100)


async def test_a_model_the_batch_api_refuses_is_evaluated_one_request_at_a_time(fake_zhipu):
    fake_zhipu.batch.models = frozenset({"glm-4", "glm-4-plus"})
    zhipu = classifier(fake_zhipu)
    with pytest.raises(BackendError, match=r"Batch API .*code 1210: 模型名称错误"):
        await zhipu.classify_bulk(REVIEWS)
    assert not fake_zhipu.batch.batches

    answers = await classify_all(zhipu, REVIEWS)
    assert labels(answers) == [Label.from_zh(keyword_rule(r)) for r in REVIEWS]
    assert one_by_one(fake_zhipu) == len(REVIEWS)


async def test_an_evaluation_restarted_while_its_batch_runs_takes_that_batch(fake_zhipu):
    fake_zhipu.batch.takes_s = 2.0
    first = asyncio.create_task(classifier(fake_zhipu).classify_bulk(REVIEWS))
    while not fake_zhipu.batch.batches:
        await asyncio.sleep(0.05)
    first.cancel()  # the process running the evaluation dies
    with pytest.raises(asyncio.CancelledError):
        await first

    answers = await classifier(fake_zhipu).classify_bulk(REVIEWS)
    assert len(fake_zhipu.batch.batches) == 1, "paid for once"
    assert labels(answers) == [Label.from_zh(keyword_rule(r)) for r in REVIEWS]


async def test_a_failed_batch_raises_so_that_the_caller_asks_one_by_one(fake_zhipu):
    fake_zhipu.batch.invalid = "第 1 行的 body 参数非法"
    with pytest.raises(BackendError, match=r"batch \w+ failed: 1214: 第 1 行的 body 参数非法"):
        await classifier(fake_zhipu).classify_bulk(REVIEWS)
