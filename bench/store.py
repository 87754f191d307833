"""Stores for the benchmarks: a prepared one in a new temporary folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

from core.config import DataSettings, DBSettings, LocalModelSettings, Settings
from core.models.dataset import prepare
from core.wiring import Core
from migrations import upgrade_schema


def empty_core(url: str, root: Path) -> Core:
    """A Core on the migrated, empty store at ``url`` (files under ``root``), its API unthrottled:
    for a benchmark that fills the store itself."""
    settings = Settings(
        _env_file=None,
        db=DBSettings(url=url),
        data=DataSettings(dir=root / "data"),
        local=LocalModelSettings(dir=root / "models"),
    )
    settings.api.rate_limit = "1000000/second"
    core = Core(settings)
    upgrade_schema(core.engine)
    return core


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
