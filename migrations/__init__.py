"""Alembic migrations of the store, and the one way to apply them (``waimai db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from core.config import DBSettings
from core.store.db import make_engine


def upgrade_schema(engine: Engine, revision: str = "heads") -> None:
    """Apply the migrations up to ``revision`` on ``engine``'s database."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def upgrade_database(db: DBSettings) -> str:
    """Apply every pending migration to ``db``; returns its URL with the password hidden."""
    engine = make_engine(db)
    try:
        upgrade_schema(engine)
        return engine.url.render_as_string(hide_password=True)
    finally:
        engine.dispose()
