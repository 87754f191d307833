"""Stores for the benchmarks: a prepared one in a new temporary folder, a new PostgreSQL one."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from core.config import DataSettings, DBSettings, LocalModelSettings, Settings
from core.data import prepare
from core.db import upgrade_schema
from core.wiring import Core

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def fresh_core(name: str) -> Core:
    """A Core on a new SQLite store holding the canonical split (no model yet)."""
    root = Path(tempfile.mkdtemp(prefix=f"waimai-bench-{name}-"))
    settings = Settings(
        _env_file=None,
        db=DBSettings(url=f"sqlite:///{root / 'bench.db'}"),
        data=DataSettings(dir=root / "data"),
        local=LocalModelSettings(dir=root / "models"),
    )
    core = Core(settings)
    upgrade_schema(core.engine)
    prepare(core.engine, settings.data.source, settings.data.dir)
    return core


@contextmanager
def scratch_database() -> Iterator[str]:
    """A new, empty database on the PostgreSQL server at 127.0.0.1:5432, dropped afterwards."""
    name = f"waimai_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
