"""Alembic environment: the URL comes from the caller's config, or from the settings."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import core.store.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from core.config import get_settings
from core.store.db import make_engine

config = context.config
connection = config.attributes.get("connection")


def run() -> None:
    if connection is not None:
        _run_with(connection)
        return
    engine = make_engine(get_settings().db)
    with engine.connect() as conn:
        _run_with(conn)
    engine.dispose()


def _run_with(conn: object) -> None:
    context.configure(
        connection=conn,
        target_metadata=SQLModel.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
