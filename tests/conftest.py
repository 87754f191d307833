"""Shared fixtures: settings on temporary folders, databases (SQLite always, PostgreSQL if up)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core.config import DataSettings, DBSettings, LocalModelSettings, Settings
from core.models.dataset import prepare
from core.store.db import make_engine
from core.wiring import Core
from migrations import upgrade_schema
from retrain.cycle import run_cycle
from tests.support.loopback import postgres_reachable, scratch_database

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO.parent / "shared" / "data" / "waimai_10k.csv"
# The LoRA trainer and real-vLLM fixtures (tiny model, adapter store, server).
pytest_plugins = ["tests.support.vllm_fixtures"]


def make_settings(root: Path, db_url: str | None = None) -> Settings:
    return Settings(
        _env_file=None,
        env="test",
        db=DBSettings(url=db_url or f"sqlite:///{root / 'waimai.db'}"),
        data=DataSettings(dir=root / "data", source=str(DATASET)),
        local=LocalModelSettings(dir=root / "models"),
    )


@pytest.fixture
def dataset() -> Path:
    if not DATASET.is_file():
        pytest.skip(f"the dataset is not at {DATASET}")
    return DATASET


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with scratch_database() as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated, empty store."""
    engine = make_engine(DBSettings(url=db_url))
    upgrade_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a prepared SQLite store and one active local model, built once."""
    if not DATASET.is_file():
        pytest.skip(f"the dataset is not at {DATASET}")
    root = tmp_path_factory.mktemp("trained")
    core = Core(make_settings(root))
    upgrade_schema(core.engine)
    prepare(core.engine, str(DATASET), root / "data")
    assert asyncio.run(run_cycle(core, "local")).outcome == "promoted"
    core.engine.dispose()
    return root


@pytest.fixture
def core(trained_store: Path, tmp_path: Path) -> Iterator[Core]:
    """A core on a private copy of the trained store."""
    shutil.copy(trained_store / "waimai.db", tmp_path / "waimai.db")
    shutil.copytree(trained_store / "models", tmp_path / "models")
    core = Core(make_settings(tmp_path))
    yield core
    core.engine.dispose()
