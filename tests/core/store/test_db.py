"""The engine's connections follow the DB__POOL_* and DB__CONNECT_TIMEOUT_S settings."""

import asyncio
import socket
import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import QueuePool

from core.config import DBSettings
from core.store.db import make_engine, run_store_work


def test_the_pool_is_sized_by_the_settings():
    settings = DBSettings(
        url="postgresql+psycopg://nobody@127.0.0.1:1/none",
        pool_size=3,
        max_overflow=7,
        pool_timeout_s=4.5,
        pool_recycle_s=600,
    )
    engine = make_engine(settings)
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.size() == 3
    assert pool.overflow() == -3, "no connection opened yet: 3 below the first overflow"
    assert pool._max_overflow == 7
    assert pool.timeout() == 4.5
    assert pool._recycle == 600
    assert pool._pre_ping


def test_the_defaults_are_five_plus_ten_thirty_seconds_and_half_an_hour():
    pool = make_engine(DBSettings(url="postgresql+psycopg://nobody@127.0.0.1:1/none")).pool
    assert isinstance(pool, QueuePool)
    assert (pool.size(), pool._max_overflow, pool.timeout(), pool._recycle) == (5, 10, 30, 1800)


@pytest.mark.parametrize("field", ["pool_size", "pool_timeout_s", "pool_recycle_s"])
def test_a_pool_without_room_or_time_is_refused(field: str):
    with pytest.raises(ValueError, match=field):
        DBSettings(**{field: 0})


postgres_only = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@postgres_only
def test_a_full_pool_makes_the_next_caller_wait_then_fail(db_url: str):
    engine = make_engine(DBSettings(url=db_url, pool_size=1, max_overflow=1, pool_timeout_s=0.3))
    try:
        with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):
                assert connection.execute(text("SELECT 1")).scalar() == 1
            started = time.monotonic()
            with pytest.raises(PoolTimeout):
                engine.connect()
            assert 0.25 < time.monotonic() - started < 5
        assert isinstance(engine.pool, QueuePool)
        assert engine.pool.checkedin() == 1, "the overflow connection was closed, not kept"
    finally:
        engine.dispose()


@postgres_only
def test_an_old_connection_is_replaced(db_url: str):
    engine = make_engine(DBSettings(url=db_url, pool_size=1, pool_recycle_s=0.2))
    backend_pid = text("SELECT pg_backend_pid()")
    try:
        with engine.connect() as connection:
            first = connection.execute(backend_pid).scalar()
        with engine.connect() as connection:
            assert connection.execute(backend_pid).scalar() == first, "reused while young"
        time.sleep(0.3)
        with engine.connect() as connection:
            assert connection.execute(backend_pid).scalar() != first
    finally:
        engine.dispose()


def test_a_server_that_never_answers_fails_the_connection_within_the_connect_timeout():
    with socket.socket() as silent:  # accepts connections (the backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        engine = make_engine(
            DBSettings(
                url=f"postgresql+psycopg://nobody@127.0.0.1:{port}/none", connect_timeout_s=1
            )
        )
        started = time.monotonic()
        with pytest.raises(OperationalError), engine.connect():
            pass
        assert time.monotonic() - started < 5
        engine.dispose()


def test_store_work_runs_on_the_loop_for_sqlite_and_in_a_thread_for_a_networked_store(
    db_url: str,
):
    engine = make_engine(DBSettings(url=db_url))

    async def thread_of_the_work() -> tuple[int, int]:
        def work() -> int:
            with engine.connect() as connection:
                assert connection.execute(text("SELECT 1")).scalar() == 1
            return threading.get_ident()

        return threading.get_ident(), await run_store_work(engine, work)

    try:
        loop_thread, work_thread = asyncio.run(thread_of_the_work())
    finally:
        engine.dispose()
    assert (loop_thread == work_thread) == db_url.startswith("sqlite")
