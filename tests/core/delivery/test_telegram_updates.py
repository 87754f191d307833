"""Telegram updates are taken once, on SQLite and PostgreSQL, by however many processes; one whose
replica died before handling it is taken again by one sweeper, and given up after a few tries."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from threading import Barrier

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from core.config import DBSettings
from core.delivery.telegram_updates import Stalled, TelegramUpdates
from core.store.db import make_engine
from core.store.tables import TelegramUpdate

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
PAYLOAD = '{"update_id": 1}'
STALL = timedelta(minutes=2)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def kept(engine: Engine) -> list[int]:
    with Session(engine) as session:
        return sorted(r.update_id for r in session.exec(select(TelegramUpdate)).all())


async def test_an_update_is_taken_once(engine: Engine):
    updates = TelegramUpdates(engine)
    assert await updates.claim(1, PAYLOAD)
    assert not await updates.claim(1, PAYLOAD)
    assert await updates.claim(2**40, PAYLOAD)  # Telegram's ids are 64-bit safe
    assert not await TelegramUpdates(engine).claim(2**40, PAYLOAD)
    assert kept(engine) == [1, 2**40]


def test_racing_processes_take_an_update_exactly_once(engine: Engine, db_url: str):
    """Eight 'replicas', each with its own engine (connection pool) on the same database,
    claim the same updates at the same moment."""
    engines = [make_engine(DBSettings(url=db_url, busy_timeout_ms=10_000)) for _ in range(8)]
    replicas = [TelegramUpdates(e) for e in engines]
    try:
        for update_id in (10, 11, 12):
            barrier = Barrier(len(replicas))

            def claim(
                replica: TelegramUpdates, update_id: int = update_id, barrier: Barrier = barrier
            ) -> bool:
                barrier.wait()
                return asyncio.run(replica.claim(update_id, PAYLOAD))

            with ThreadPoolExecutor(len(replicas)) as pool:
                won = list(pool.map(claim, replicas))
            assert won.count(True) == 1, won
    finally:
        for each in engines:
            each.dispose()
    assert kept(engine) == [10, 11, 12]


async def test_updates_older_than_a_week_are_pruned_by_the_claims(engine: Engine):
    clock = Clock()
    updates = TelegramUpdates(engine, keep=timedelta(days=7), prune_every=3, clock=clock)
    assert await updates.claim(1, PAYLOAD)  # the first claim prunes (nothing yet)
    clock.now += timedelta(days=6)
    assert await updates.claim(2, PAYLOAD)
    clock.now += timedelta(days=1, seconds=1)
    assert await updates.claim(3, PAYLOAD)
    assert kept(engine) == [1, 2, 3]  # the third claim is not due to prune
    assert await updates.claim(4, PAYLOAD)  # the fourth is: update 1 is older than a week
    assert kept(engine) == [2, 3, 4]
    clock.now += timedelta(days=30)
    assert updates.prune() == 3
    assert kept(engine) == []
    # Pruned ids may be taken again (Telegram's ids only grow).
    assert await updates.claim(1, PAYLOAD)


def row(engine: Engine, update_id: int) -> TelegramUpdate:
    with Session(engine) as session:
        found = session.get(TelegramUpdate, update_id)
    assert found is not None
    return found


async def test_an_update_keeps_its_json_and_is_marked_handled(engine: Engine):
    updates = TelegramUpdates(engine)
    assert await updates.claim(5, '{"update_id": 5, "message": {"text": "好吃"}}')
    taken = row(engine, 5)
    assert (taken.payload, taken.attempts, taken.handled_at) == (
        '{"update_id": 5, "message": {"text": "好吃"}}',
        1,
        None,
    )
    await updates.handled(5)
    assert row(engine, 5).handled_at is not None


async def test_a_stalled_update_is_taken_again_until_it_is_given_up(
    engine: Engine, caplog: pytest.LogCaptureFixture
):
    clock = Clock()
    updates = TelegramUpdates(engine, clock=clock)
    assert await updates.claim(1, PAYLOAD)  # and its replica dies
    assert await updates.claim(2, PAYLOAD)
    await updates.handled(2)
    clock.now += STALL - timedelta(seconds=1)
    assert await updates.take_stalled(STALL, max_attempts=3) == []  # not stalled yet
    clock.now += timedelta(seconds=2)
    assert await updates.take_stalled(STALL, max_attempts=3) == [Stalled(1, PAYLOAD)]
    assert await updates.take_stalled(STALL, max_attempts=3) == []  # taken: alive for another STALL
    clock.now += STALL + timedelta(seconds=1)
    assert await updates.take_stalled(STALL, max_attempts=3) == [Stalled(1, PAYLOAD)]
    assert row(engine, 1).attempts == 3
    clock.now += STALL + timedelta(seconds=1)
    assert await updates.take_stalled(STALL, max_attempts=3) == []  # given up
    assert row(engine, 1).handled_at is not None
    assert "Telegram update 1 was taken 3 times and never handled; given up" in caplog.text
    clock.now += STALL * 10
    assert await updates.take_stalled(STALL, max_attempts=3) == []


async def test_an_update_kept_alive_is_not_stalled(engine: Engine):
    clock = Clock()
    updates = TelegramUpdates(engine, clock=clock)
    assert await updates.claim(1, PAYLOAD)
    for _ in range(5):  # a long handler, touching it every half STALL
        clock.now += STALL / 2
        await updates.touch(1)
        assert await updates.take_stalled(STALL, max_attempts=3) == []
    await updates.handled(1)
    clock.now += STALL * 2
    assert await updates.take_stalled(STALL, max_attempts=3) == []
    await updates.touch(1)  # a late touch after the handler finished changes nothing
    assert row(engine, 1).handled_at is not None


def test_racing_sweepers_take_a_stalled_update_exactly_once(engine: Engine, db_url: str):
    """Eight 'replicas' sweep at the same moment for the updates a dead one had taken."""
    clock = Clock()
    claimer = TelegramUpdates(engine, clock=clock)
    assert all(asyncio.run(claimer.claim(n, PAYLOAD)) for n in range(20))
    clock.now += STALL * 2
    engines = [make_engine(DBSettings(url=db_url, busy_timeout_ms=10_000)) for _ in range(8)]
    sweepers = [TelegramUpdates(e, clock=clock) for e in engines]
    barrier = Barrier(len(sweepers))

    def sweep(sweeper: TelegramUpdates) -> list[Stalled]:
        barrier.wait()
        return asyncio.run(sweeper.take_stalled(STALL, max_attempts=3))

    try:
        with ThreadPoolExecutor(len(sweepers)) as pool:
            taken = [each.update_id for found in pool.map(sweep, sweepers) for each in found]
    finally:
        for each in engines:
            each.dispose()
    assert sorted(taken) == list(range(20))
    assert {row(engine, n).attempts for n in range(20)} == {2}


async def test_an_update_taken_by_a_version_without_payloads_is_closed_quietly(
    engine: Engine, caplog: pytest.LogCaptureFixture
):
    """During a rolling upgrade, replicas of the version before migration 0010 still take
    updates without their JSON, and never mark them handled."""
    clock = Clock()
    with Session(engine) as session:
        session.add(TelegramUpdate(update_id=7, received_at=clock.now))
        session.commit()
    clock.now += STALL * 2
    assert await TelegramUpdates(engine, clock=clock).take_stalled(STALL, max_attempts=3) == []
    assert row(engine, 7).handled_at is not None
    assert "given up" not in caplog.text
