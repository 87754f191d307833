import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from core.classify.coalescing import Coalescer
from core.classify.service import ClassificationService, ReviewInput
from core.errors import BackendUnavailable
from core.store.tables import ModelVersion, Review, Source, TenantView
from core.wiring import Core
from serving.base import Answer, BackendError, Classifier


class Recorder:
    """Processes a batch of numbers (doubling them); remembers each batch; 13 fails alone."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def process(self, batch: list[int]) -> list[int | BaseException]:
        self.batches.append(batch)
        await asyncio.sleep(0.01)
        return [ValueError("13") if n == 13 else n * 2 for n in batch]


def test_concurrent_requests_share_batches_and_get_their_own_results():
    recorder = Recorder()
    coalescer = Coalescer(recorder.process, max_weight=100, weight=lambda _: 1)

    async def main() -> Any:
        return await asyncio.gather(*(coalescer.submit(n) for n in range(100, 140)))

    assert asyncio.run(main()) == [n * 2 for n in range(100, 140)]
    assert len(recorder.batches) < 40
    assert sorted(n for batch in recorder.batches for n in batch) == list(range(100, 140))


def test_requests_that_keep_arriving_turn_after_turn_join_one_batch():
    recorder = Recorder()
    coalescer = Coalescer(recorder.process, max_weight=100, weight=lambda _: 1)

    async def one_request_a_turn() -> Any:
        submitted = []
        for n in range(3):
            submitted.append(asyncio.create_task(coalescer.submit(n)))
            await asyncio.sleep(0)
        return await asyncio.gather(*submitted)

    assert asyncio.run(one_request_a_turn()) == [0, 2, 4]
    assert recorder.batches == [[0, 1, 2]]


def test_a_failure_reaches_only_its_own_request():
    coalescer = Coalescer(Recorder().process, max_weight=100, weight=lambda _: 1)

    async def main() -> Any:
        return await asyncio.gather(
            *(coalescer.submit(n) for n in (12, 13, 14)), return_exceptions=True
        )

    first, failed, last = asyncio.run(main())
    assert (first, last) == (24, 28)
    assert isinstance(failed, ValueError)


def test_a_batch_that_raises_fails_all_of_its_requests_and_the_next_batch_still_runs():
    calls = []

    async def process(batch: list[int]) -> list[int | BaseException]:
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("store down")
        return list(batch)

    coalescer = Coalescer(process, max_weight=100, weight=lambda _: 1)

    async def main() -> Any:
        failed = await asyncio.gather(
            coalescer.submit(1), coalescer.submit(2), return_exceptions=True
        )
        return failed, await coalescer.submit(3)

    failed, after = asyncio.run(main())
    assert all(isinstance(error, RuntimeError) for error in failed)
    assert after == 3


def test_batches_stay_under_the_weight_limit_and_a_heavy_request_goes_alone():
    recorder = Recorder()
    coalescer = Coalescer(recorder.process, max_weight=10, weight=lambda n: n)

    async def main() -> Any:
        await asyncio.gather(*(coalescer.submit(n) for n in (4, 4, 4, 30, 1)))

    asyncio.run(main())
    assert all(sum(batch) <= 10 or len(batch) == 1 for batch in recorder.batches)
    assert [30] in recorder.batches


def test_at_most_two_batches_are_in_flight_and_none_is_left_behind():
    running, most = 0, 0

    async def process(batch: list[int]) -> list[int | BaseException]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.005)
        running -= 1
        return list(batch)

    coalescer = Coalescer(process, max_weight=3, weight=lambda _: 1)

    async def main() -> Any:
        first = await asyncio.gather(*(coalescer.submit(n) for n in range(20)))
        await asyncio.sleep(0.02)  # every worker has finished: the next request starts one
        return first, await coalescer.submit(99)

    assert asyncio.run(main()) == (list(range(20)), 99)
    assert most == 2


def test_a_cancelled_caller_does_not_disturb_the_others():
    recorder = Recorder()
    coalescer = Coalescer(recorder.process, max_weight=100, weight=lambda _: 1)

    async def main() -> Any:
        doomed = asyncio.create_task(coalescer.submit(1))
        kept = asyncio.create_task(coalescer.submit(2))
        await asyncio.sleep(0)
        doomed.cancel()
        return await kept, doomed.cancelled()

    assert asyncio.run(main()) == (4, True)


def test_each_event_loop_gets_a_fresh_queue():
    coalescer = Coalescer(Recorder().process, max_weight=100, weight=lambda _: 1)
    assert asyncio.run(coalescer.submit(1)) == 2
    assert asyncio.run(coalescer.submit(2)) == 4


class Spy:
    """The real backends, recording how many texts each model call got; a text containing
    毒 makes the whole call fail (as a content filter would)."""

    def __init__(self, core: Core) -> None:
        self.real = core.backends
        self.calls: list[int] = []

    def for_version(self, version: ModelVersion) -> Classifier:
        return SpyClassifier(self, self.real.for_version(version))

    def for_view(self, view: TenantView) -> Classifier:
        return SpyClassifier(self, self.real.for_view(view))


class SpyClassifier:
    def __init__(self, spy: Spy, real: Classifier) -> None:
        self.spy, self.real = spy, real

    @property
    def model_id(self) -> str:
        return self.real.model_id

    async def classify(self, texts: Sequence[str]) -> Sequence[Answer]:
        self.spy.calls.append(len(texts))
        if any("毒" in text for text in texts):
            raise BackendError("refused: content filter")
        return await self.real.classify(texts)

    async def probe(self) -> None:
        await self.real.probe()


@pytest.fixture
def spied(core: Core) -> tuple[ClassificationService, Spy]:
    spy = Spy(core)
    return ClassificationService(core.engine, spy, core.settings.serving), spy


def reviews_of(core: Core, tenant: str) -> list[str]:
    with Session(core.engine) as session:
        return list(session.exec(select(Review.text).where(Review.tenant == tenant)).all())


async def classify_many(service: ClassificationService, texts: list[str], **kwargs):
    return await asyncio.gather(
        *(
            service.classify([ReviewInput(text)], source=Source.API, tenant="acme", **kwargs)
            for text in texts
        ),
        return_exceptions=True,
    )


def test_concurrent_classify_calls_share_model_calls_and_each_gets_its_own_review(core, spied):
    service, spy = spied
    texts = [f"好吃，第{i}次点了" if i % 2 else f"太难吃了，第{i}次" for i in range(30)]
    results = asyncio.run(classify_many(service, texts))
    assert [r[0].text for r in results] == texts
    assert [r[0].verdict.label.api_name for r in results[:2]] == ["negative", "positive"]
    assert len(spy.calls) < len(texts)
    assert sum(spy.calls) == len(texts)
    assert sorted(reviews_of(core, "acme")) == sorted(texts)
    assert len({r[0].review_id for r in results}) == len(texts)


def test_a_review_the_backend_refuses_fails_only_its_own_request(core, spied):
    service, _spy = spied
    core.settings.serving.fallbacks = []
    texts = ["好吃", "有毒的评论", "太慢了"]
    first, refused, last = asyncio.run(classify_many(service, texts))
    assert isinstance(refused, BackendUnavailable)
    assert first[0].text == "好吃" and last[0].text == "太慢了"
    assert sorted(reviews_of(core, "acme")) == sorted(["好吃", "太慢了"])


def test_a_request_whose_transaction_fails_stores_nothing_and_spares_the_others(core: Core):
    def explode(session, results):
        if results[0].text == "坏":
            raise RuntimeError("the hook failed")

    outcomes = asyncio.run(
        classify_many(core.classification, ["好", "坏", "行"], on_stored=explode)
    )
    assert isinstance(outcomes[1], RuntimeError)
    assert sorted(reviews_of(core, "acme")) == sorted(["好", "行"])


def test_a_lost_connection_fails_the_shared_transaction_without_storing_anyone_twice(core: Core):
    """After a connection error the commit's outcome is unknown: the requests are not stored again
    one by one (that could store their reviews twice); each gets the error."""
    calls = []

    def connection_lost(session, results):
        calls.append([result.text for result in results])
        raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))

    outcomes = asyncio.run(
        classify_many(core.classification, ["好", "坏", "行"], on_stored=connection_lost)
    )
    assert all(isinstance(outcome, OperationalError) for outcome in outcomes)
    assert calls == [["好"]], "the hook runs per request inside the one shared transaction"
    assert reviews_of(core, "acme") == []
