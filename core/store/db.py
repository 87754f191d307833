"""Engines and units of work. SQLite by default (WAL, busy timeout), PostgreSQL by URL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session, create_engine

from core.config import DBSettings

STORE_OUTAGES = (OperationalError, InterfaceError, PoolTimeout)
"""What the store raises when it cannot be reached, lost the connection or has none to give:
the same work can succeed later, unchanged."""


T = TypeVar("T")
P = ParamSpec("P")


async def run_store_work(engine: Engine, work: Callable[[], T]) -> T:
    """Run ``work`` against ``engine``'s store from async code: in a worker thread for a networked
    store, so that its round trips do not stall the event loop; on the loop's own thread for
    SQLite, a library call whose Python side holds the GIL anyway (handing it to a thread and back
    cost about a third of a single-review classify request, measured). On SQLite, waiting for
    another writer's lock therefore holds up the loop too."""
    if engine.dialect.name == "sqlite":
        return work()
    return await asyncio.to_thread(work)


class StoreService:
    """A service over the store whose async methods decide where their store work runs."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def _run(
        self, work: Callable[Concatenate[Engine, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return await run_store_work(self._engine, partial(work, self._engine, *args, **kwargs))


def make_engine(db: DBSettings) -> Engine:
    """An engine for ``db.url``; for SQLite the file's folder is created and pragmas are set."""
    url = make_url(db.url)
    if url.get_backend_name() != "sqlite":
        return create_engine(
            url,
            echo=db.echo,
            pool_pre_ping=True,
            pool_size=db.pool_size,
            max_overflow=db.max_overflow,
            pool_timeout=db.pool_timeout_s,
            pool_recycle=db.pool_recycle_s,
            connect_args={"connect_timeout": db.connect_timeout_s},
        )

    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        echo=db.echo,
        connect_args={"check_same_thread": False, "timeout": db.busy_timeout_ms / 1000},
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(db.busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


@contextmanager
def unit_of_work(engine: Engine) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back if it raises."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
