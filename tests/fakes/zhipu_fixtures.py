"""Fixtures for tests that talk to the fake Zhipu with the real SDK (import them by name).

The store here is built from a sample of the dataset, so that evaluating a Zhipu model on its
holdout takes a few hundred requests rather than 3,597.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from pydantic import SecretStr

from core.config import ZhipuSettings
from core.models.dataset import prepare
from core.wiring import Core
from migrations import upgrade_schema
from retrain.cycle import run_cycle
from tests.conftest import DATASET, make_settings
from tests.fakes.zhipu_server import FakeZhipu, serving

SAMPLE_ROWS = 600


@pytest.fixture(name="fake_zhipu")
def fake_zhipu_fixture() -> Iterator[FakeZhipu]:
    """The fake on a free loopback port; jobs queue for 0.2 s and train for 0.4 s."""
    fake = FakeZhipu(queue_s=0.2, train_s=0.4)
    with serving(fake):
        yield fake


@pytest.fixture(scope="session", name="small_store")
def small_store_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store prepared from a sample of the dataset, with an active local model, built once."""
    if not DATASET.is_file():
        pytest.skip(f"the dataset is not at {DATASET}")
    root = tmp_path_factory.mktemp("small")
    sample = pd.read_csv(DATASET).sample(n=SAMPLE_ROWS, random_state=5)
    sample.to_csv(root / "sample.csv", index=False)
    core = Core(make_settings(root))
    upgrade_schema(core.engine)
    prepare(core.engine, str(root / "sample.csv"), root / "data")
    assert asyncio.run(run_cycle(core, "local")).outcome == "promoted"
    core.engine.dispose()
    return root


def zhipu_settings(fake: FakeZhipu, **changes: object) -> ZhipuSettings:
    """Settings that point at the fake, with quick retries, breaker and polling."""
    values: dict[str, object] = {
        "api_key": SecretStr(fake.api_key),
        "base_url": fake.base_url,
        "timeout_s": 5.0,
        "max_rps": 1000.0,
        "retries": 2,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "breaker_failures": 5,
        "breaker_reset_s": 0.5,
        "poll_interval_s": 0.05,
    }
    return ZhipuSettings.model_validate(values | changes)


@pytest.fixture(name="zhipu_core")
def zhipu_core_fixture(small_store: Path, fake_zhipu: FakeZhipu, tmp_path: Path) -> Iterator[Core]:
    """A core on a private copy of the small store, its Zhipu settings pointing at the fake."""
    shutil.copy(small_store / "waimai.db", tmp_path / "waimai.db")
    shutil.copytree(small_store / "models", tmp_path / "models")
    shutil.copytree(small_store / "data", tmp_path / "data")
    settings = make_settings(tmp_path).model_copy(update={"zhipu": zhipu_settings(fake_zhipu)})
    core = Core(settings)
    yield core
    core.engine.dispose()
