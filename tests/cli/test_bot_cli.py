"""``waimai bot``, ``waimai bot invite`` and ``waimai serve`` (the API with the bot beside it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlmodel import Session, select
from typer.testing import CliRunner

from cli.bot import describe
from cli.main import app
from core.config import TelegramSettings, get_settings
from core.db import make_engine, upgrade_schema
from core.tables import Invite
from tests.fakes.telegram_server import TOKEN, FakeTelegram, serving_in_thread

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB__URL", f"sqlite:///{tmp_path / 'bot.db'}")
    for name in ("TELEGRAM__TOKEN", "TELEGRAM__BOT_USERNAME", "TELEGRAM__API_BASE"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    upgrade_schema(engine := make_engine(get_settings().db))
    engine.dispose()
    yield tmp_path
    get_settings.cache_clear()


def invites(env: Path) -> list[Invite]:
    engine = make_engine(get_settings().db)
    with Session(engine) as session:
        found = list(session.exec(select(Invite)).all())
    engine.dispose()
    return found


def test_the_bot_refuses_to_start_without_a_token(env):
    result = runner.invoke(app, ["bot"])
    assert result.exit_code == 2
    assert "TELEGRAM__TOKEN is not set, so the Telegram bot is off" in result.output


def test_invite_links_offline_from_the_setting(env, monkeypatch):
    monkeypatch.setenv("TELEGRAM__BOT_USERNAME", "@shop_bot")
    get_settings.cache_clear()
    result = runner.invoke(app, ["bot", "invite", "--by", "ops"])
    assert result.exit_code == 0, result.output
    (invite,) = invites(env)
    assert f"https://t.me/shop_bot?start={invite.code}" in result.output
    assert invite.created_by == "ops"


def test_invite_links_name_the_bot_from_get_me(env, monkeypatch):
    with serving_in_thread(FakeTelegram(username="waimai_fake_bot")) as base_url:
        monkeypatch.setenv("TELEGRAM__TOKEN", TOKEN)
        monkeypatch.setenv("TELEGRAM__API_BASE", base_url)
        get_settings.cache_clear()
        result = runner.invoke(app, ["bot", "invite"])
    assert result.exit_code == 0, result.output
    (invite,) = invites(env)
    assert f"https://t.me/waimai_fake_bot?start={invite.code}" in result.output


def test_invite_without_telegram_says_what_to_set_and_stores_nothing(env, monkeypatch):
    monkeypatch.setenv("TELEGRAM__TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM__API_BASE", f"http://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    result = runner.invoke(app, ["bot", "invite"])
    assert result.exit_code == 1
    assert "set TELEGRAM__BOT_USERNAME" in result.output
    assert invites(env) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_serve(env: Path, extra: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM__")},
        "DB__URL": f"sqlite:///{env / 'bot.db'}",
        **extra,
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "waimai"), "serve", "--port", str(port)],
        cwd=Path(__file__).resolve().parents[2],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120  # a cold start imports FastAPI, aiogram, the SDKs
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return process, port
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    pytest.fail(f"waimai serve did not come up: {process.communicate()[0]}")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    return output


@pytest.mark.slow
def test_serve_runs_the_api_and_the_bot_in_one_process(env):
    server = FakeTelegram()
    with serving_in_thread(server) as base_url:
        telegram = {"TOKEN": TOKEN, "API_BASE": base_url, "POLLING_TIMEOUT_S": "1"}
        process, _ = run_serve(env, {f"TELEGRAM__{k}": v for k, v in telegram.items()})
        deadline = time.monotonic() + 60
        while not server.calls_of("getMe") and time.monotonic() < deadline:
            time.sleep(0.1)
        output = stop(process)
    assert server.calls_of("getMe"), output
    assert f"Telegram bot: long polling {base_url}" in output
    assert process.returncode in (0, -signal.SIGINT, 130), output


def test_serve_says_when_the_bot_is_off():
    assert describe(TelegramSettings()) == "Telegram bot: off (TELEGRAM__TOKEN is not set)"
    on = TelegramSettings(token=SecretStr(TOKEN), access="open", admins=[1, 2])
    assert describe(on) == (
        "Telegram bot: long polling https://api.telegram.org (access: open, 2 admin(s))"
    )
