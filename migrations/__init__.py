"""Alembic migrations of the store, and the one way to apply them (``waimai db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine


def upgrade_schema(engine: Engine, revision: str = "heads") -> None:
    """Apply the migrations up to ``revision`` on ``engine``'s database."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
