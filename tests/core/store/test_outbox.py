"""Notifications cross processes through the database, on SQLite and PostgreSQL: each Core below
stands for a process (its own engine and pool) on the same store. And retrain requests publish
on them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from core.store.db import unit_of_work
from core.store.outbox import Event, Notifications, RetrainFinished, RetrainRequested
from core.store.tables import Notification, RetrainRequest, utcnow
from core.wiring import Core
from tests.conftest import make_settings

FINISHED = RetrainFinished(3, promoted=True, reason="better")


class Listener:
    """A subscriber that records what it hears; it fails the first ``failures`` times."""

    def __init__(self, failures: int = 0) -> None:
        self.heard: list[Event] = []
        self.failures = failures

    async def __call__(self, event: Event) -> None:
        self.heard.append(event)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("cannot send")


async def eventually(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def stopped_at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def stored(engine: Engine) -> list[Notification]:
    with Session(engine) as session:
        return list(session.exec(select(Notification).order_by(col(Notification.id))).all())


@pytest.fixture
def processes(db_url: str, engine: Engine, tmp_path: Path) -> Iterator[Callable[..., Core]]:
    """Cores on the test's migrated database, polling every 20 ms; ``tuning`` sets attributes
    of their Notifications (``claim_timeout``, ...)."""
    made: list[Core] = []

    def process(**tuning: Any) -> Core:
        settings = make_settings(tmp_path / f"process-{len(made)}", db_url)
        core = Core(
            settings.model_copy(
                update={
                    "db": settings.db.model_copy(update={"busy_timeout_ms": 10_000}),
                    "telegram": settings.telegram.model_copy(update={"notify_poll_s": 0.02}),
                }
            )
        )
        for name, value in tuning.items():
            setattr(core.notifications, name, value)
        made.append(core)
        return core

    yield process
    for core in made:
        core.engine.dispose()


async def test_an_event_published_in_one_process_reaches_a_subscriber_in_another(
    processes: Callable[..., Core], engine: Engine
):
    worker, bot = processes(), processes()
    listener = Listener()
    unsubscribe = bot.notifications.subscribe(listener)
    try:
        await worker.notifications.publish(FINISHED)
        await eventually(lambda: listener.heard == [FINISHED])
        await eventually(lambda: stored(engine)[0].delivered_at is not None)
        (row,) = stored(engine)
        assert (row.kind, row.payload) == (
            "RetrainFinished",
            {"candidate_version_id": 3, "promoted": True, "reason": "better"},
        )
    finally:
        unsubscribe()
    await worker.notifications.publish(RetrainFinished(4, promoted=False, reason="worse"))
    await asyncio.sleep(0.2)
    assert listener.heard == [FINISHED]  # unsubscribed: nobody polls any more
    assert stored(engine)[1].delivered_at is None


async def test_of_several_listening_processes_exactly_one_delivers_each_event(
    processes: Callable[..., Core],
):
    worker = processes()
    listeners = [Listener() for _ in range(3)]
    unsubscribes = [processes().notifications.subscribe(each) for each in listeners]
    events = [RetrainFinished(n, promoted=n % 2 == 0, reason=f"run {n}") for n in range(12)]
    try:
        for event in events:
            await worker.notifications.publish(event)
        await eventually(lambda: sum(len(each.heard) for each in listeners) >= len(events))
        await asyncio.sleep(0.3)
    finally:
        for unsubscribe in unsubscribes:
            unsubscribe()
    heard = [event for each in listeners for event in each.heard]
    assert sorted(heard, key=repr) == sorted(events, key=repr)


async def test_an_event_published_while_nobody_listens_is_delivered_when_one_starts(
    processes: Callable[..., Core],
):
    worker, bot = processes(), processes()
    await worker.notifications.publish(FINISHED)
    await asyncio.sleep(0.1)
    listener = Listener()
    unsubscribe = bot.notifications.subscribe(listener)
    try:
        await eventually(lambda: listener.heard == [FINISHED])
    finally:
        unsubscribe()


async def test_a_subscriber_that_fails_hears_the_event_again_after_the_claim_timeout(
    processes: Callable[..., Core], engine: Engine, caplog: pytest.LogCaptureFixture
):
    worker, bot = processes(), processes(claim_timeout=timedelta(seconds=1))
    failing, steady = Listener(failures=1), Listener()
    unsubscribes = [bot.notifications.subscribe(failing), bot.notifications.subscribe(steady)]
    try:
        with caplog.at_level(logging.ERROR, logger="core.store.outbox"):
            await worker.notifications.publish(FINISHED)
            await eventually(lambda: len(failing.heard) == 1)
            await asyncio.sleep(0.1)
            assert stored(engine)[0].delivered_at is None
            await eventually(lambda: len(failing.heard) == 2)
            await eventually(lambda: stored(engine)[0].delivered_at is not None)
            await asyncio.sleep(0.5)
    finally:
        for unsubscribe in unsubscribes:
            unsubscribe()
    assert failing.heard == steady.heard == [FINISHED, FINISHED]  # at least once, for all
    assert "failed on RetrainFinished (delivered again later)" in caplog.text


async def test_an_event_whose_process_died_while_delivering_is_delivered_by_another(
    processes: Callable[..., Core],
):
    worker = processes()
    dying = processes(claim_timeout=timedelta(seconds=0.3))
    survivor = processes(claim_timeout=timedelta(seconds=0.3))
    started = asyncio.Event()

    async def hangs(event: Event) -> None:
        started.set()
        await asyncio.Event().wait()

    stop_dying = dying.notifications.subscribe(hangs)
    await worker.notifications.publish(FINISHED)
    await asyncio.wait_for(started.wait(), 10)
    stop_dying()  # the process dies with the event claimed and not delivered
    listener = Listener()
    unsubscribe = survivor.notifications.subscribe(listener)
    try:
        await eventually(lambda: listener.heard == [FINISHED])
    finally:
        unsubscribe()


async def test_old_events_are_not_replayed_and_older_ones_are_deleted(
    processes: Callable[..., Core], engine: Engine
):
    worker, bot = processes(), processes()
    for age in (timedelta(days=40), timedelta(days=2)):
        past = Notifications(worker.engine, clock=stopped_at(utcnow() - age))
        await past.publish(RetrainFinished(1, promoted=True, reason=f"{age.days} days ago"))
    await worker.notifications.publish(FINISHED)
    listener = Listener()
    unsubscribe = bot.notifications.subscribe(listener)
    try:
        await eventually(lambda: listener.heard == [FINISHED])
        await asyncio.sleep(0.2)
    finally:
        unsubscribe()
    assert listener.heard == [FINISHED]
    assert [(row.payload["reason"], row.delivered_at is None) for row in stored(engine)] == [
        ("2 days ago", True),
        ("better", False),
    ]


async def test_an_event_this_version_cannot_read_is_dropped_and_the_next_delivered(
    processes: Callable[..., Core], engine: Engine, caplog: pytest.LogCaptureFixture
):
    worker, bot = processes(), processes()
    with unit_of_work(engine) as session:
        session.add(Notification(kind="ModelExploded", payload={"how": "badly"}))
        session.add(Notification(kind="RetrainFinished", payload={"unknown_field": 1}))
    await worker.notifications.publish(FINISHED)
    listener = Listener()
    unsubscribe = bot.notifications.subscribe(listener)
    try:
        await eventually(lambda: listener.heard == [FINISHED])
        await eventually(lambda: all(row.delivered_at is not None for row in stored(engine)))
    finally:
        unsubscribe()
    assert "cannot read a 'ModelExploded'" in caplog.text
    assert "cannot read a 'RetrainFinished'" in caplog.text


async def test_retrain_requests_coalesce_while_pending_and_publish_once(core: Core):
    listener = Listener()
    core.notifications.poll_s = 0.02
    unsubscribe = core.notifications.subscribe(listener)
    try:
        first = await core.retrain_requests.request(requested_by="telegram:1", reason="/retrain")
        again = await core.retrain_requests.request(requested_by="telegram:2")
        expected = RetrainRequested(first.request.id or 0, "telegram:1", "/retrain")
        await eventually(lambda: listener.heard == [expected])
        await asyncio.sleep(0.1)
    finally:
        unsubscribe()
    assert first.new
    assert not again.new
    assert again.request.id == first.request.id
    assert listener.heard == [expected]
    with Session(core.engine) as session:
        assert len(session.exec(select(RetrainRequest)).all()) == 1
