"""``waimai vllm``: the server command it prints, and what it says when the server is down."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from core.config import get_settings
from core.models import registry
from core.store.db import make_engine
from migrations import upgrade_schema

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB__URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("VLLM__BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("VLLM__ADAPTER_DIR", str(tmp_path / "lora"))
    get_settings.cache_clear()
    engine = make_engine(get_settings().db)
    upgrade_schema(engine)
    for name in ("waimai-a", "waimai-b", "waimai-c"):
        version = registry.register(engine, backend="vllm", model_ref=name, metrics={})
        registry.promote(engine, version.id or 0)
    engine.dispose()
    yield tmp_path
    get_settings.cache_clear()


def test_serve_prints_the_gpu_command_with_the_active_and_previous_adapters(
    env: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("VLLM__API_KEY", "s3cret-key")
    get_settings.cache_clear()
    printed = runner.invoke(app, ["vllm", "serve"])
    assert printed.exit_code == 0, printed.output
    command = printed.output.strip()
    assert command.startswith(
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve Qwen/Qwen2.5-1.5B-Instruct "
        "--host 127.0.0.1 --port 9 --enable-lora --max-lora-rank 8 --max-loras 2 "
        "--max-model-len 512 --generation-config vllm --lora-modules "
    )
    assert f"waimai-c={env / 'lora' / 'waimai-c'} waimai-b={env / 'lora' / 'waimai-b'}" in command
    assert "waimai-a" not in command
    assert command.endswith('--api-key "$VLLM__API_KEY"')
    assert "s3cret-key" not in command


def test_the_compose_file_starts_vllm_with_the_flags_serve_prints(env: Path):
    printed = runner.invoke(app, ["vllm", "serve"]).output.split()
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    started = [str(arg) for arg in compose["services"]["vllm"]["command"]]
    for flag in ("--enable-lora", "--max-lora-rank", "--max-loras", "--max-model-len"):
        assert flag in started
    position = started.index("--generation-config")
    assert started[position + 1] == "vllm" == printed[printed.index("--generation-config") + 1]


def test_status_and_load_say_so_when_the_server_is_down(env: Path):
    status = runner.invoke(app, ["vllm", "status"])
    assert status.exit_code == 1
    assert "unreachable" in status.output
    load = runner.invoke(app, ["vllm", "load"])
    assert load.exit_code == 1
    assert "did not take the adapters back" in load.output


@pytest.mark.slow
def test_train_records_a_lora_candidate(
    trained_store: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    shutil.copy(trained_store / "waimai.db", tmp_path / "waimai.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB__URL", f"sqlite:///{tmp_path / 'waimai.db'}")
    monkeypatch.setenv("DATA__DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VLLM__BASE_MODEL", str(tiny_model))
    monkeypatch.setenv("VLLM__ADAPTER_DIR", str(tmp_path / "lora"))
    get_settings.cache_clear()
    try:
        trained = runner.invoke(app, ["vllm", "train", "--max-examples", "16"])
    finally:
        get_settings.cache_clear()
    assert trained.exit_code == 0, trained.output
    assert "(vllm:waimai-" in trained.output
    assert "is candidate" in trained.output
    assert "16 examples, 2 steps" in trained.output
    assert len(list((tmp_path / "lora").iterdir())) == 1
