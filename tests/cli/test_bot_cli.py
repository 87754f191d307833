"""``waimai bot``, ``waimai bot invite``, ``waimai bot set-webhook`` / ``delete-webhook`` and
``waimai serve`` (the API with the bot beside it, polling or in webhook mode)."""

from __future__ import annotations

import os
import signal
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
from core.store.db import make_engine
from core.store.tables import Invite
from migrations import upgrade_schema
from tests.fakes.telegram_server import TOKEN, FakeTelegram, private_chat, serving_in_thread, user
from tests.support.loopback import free_port

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DB__URL", f"sqlite:///{tmp_path / 'bot.db'}")
    for name in (
        "TELEGRAM__TOKEN",
        "TELEGRAM__BOT_USERNAME",
        "TELEGRAM__API_BASE",
        "TELEGRAM__MODE",
        "TELEGRAM__WEBHOOK_SECRET",
    ):
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


@pytest.mark.slow
def test_serve_stops_its_worker_and_exits_cleanly_on_sigterm(env):
    process, _ = run_serve(env, {"LOG_LEVEL": "INFO"})
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "this worker no longer leads the learning loop" in output


def test_serve_says_when_the_bot_is_off():
    assert describe(TelegramSettings()) == "Telegram bot: off (TELEGRAM__TOKEN is not set)"
    on = TelegramSettings(token=SecretStr(TOKEN), access="open", admins=[1, 2])
    assert describe(on) == (
        "Telegram bot: long polling https://api.telegram.org (access: open, 2 admin(s))"
    )
    webhook = on.model_copy(update={"mode": "webhook", "webhook_secret": SecretStr(SECRET)})
    assert describe(webhook) == (
        "Telegram bot: webhook, served by the API at POST /telegram/webhook "
        "(access: open, 2 admin(s))"
    )


# -- webhook mode ----------------------------------------------------------------------------

SECRET = "cli-webhook_Secret-0123456789"
URL = "https://example.com/telegram/webhook"


def telegram_env(monkeypatch: pytest.MonkeyPatch, base_url: str, **settings: str) -> None:
    for name, value in {"TOKEN": TOKEN, "API_BASE": base_url, **settings}.items():
        monkeypatch.setenv(f"TELEGRAM__{name}", value)
    get_settings.cache_clear()


def test_set_webhook_registers_the_url_the_secret_and_the_update_types(env, monkeypatch):
    server = FakeTelegram()
    with serving_in_thread(server) as base_url:
        telegram_env(monkeypatch, base_url, MODE="webhook", WEBHOOK_SECRET=SECRET)
        result = runner.invoke(app, ["bot", "set-webhook", URL, "--drop-pending-updates"])
        assert result.exit_code == 0, result.output
        (call,) = server.calls_of("setWebhook")
        assert call.params["url"] == URL
        assert call.params["secret_token"] == SECRET
        assert call.params["drop_pending_updates"] is True
        assert call.params["allowed_updates"] == ["callback_query", "message"]
        assert f"Webhook set: {URL} (updates: callback_query, message; 0 pending)" in result.output
        assert "note:" not in result.output

        removed = runner.invoke(app, ["bot", "delete-webhook"])
        assert removed.exit_code == 0, removed.output
        assert server.webhook is None
        (call,) = server.calls_of("deleteWebhook")
        assert call.params.get("drop_pending_updates") is False
        assert "`waimai bot` polls again" in removed.output


def test_set_webhook_in_polling_mode_sets_it_and_says_what_to_change(env, monkeypatch):
    server = FakeTelegram()
    with serving_in_thread(server) as base_url:
        telegram_env(monkeypatch, base_url, WEBHOOK_SECRET=SECRET)
        result = runner.invoke(app, ["bot", "set-webhook", URL])
    assert result.exit_code == 0, result.output
    assert server.webhook is not None
    assert server.webhook["drop_pending_updates"] is False
    assert "set TELEGRAM__MODE=webhook" in result.output


def test_set_webhook_needs_the_secret(env, monkeypatch):
    server = FakeTelegram()
    with serving_in_thread(server) as base_url:
        telegram_env(monkeypatch, base_url)
        result = runner.invoke(app, ["bot", "set-webhook", URL])
    assert result.exit_code == 2
    assert "TELEGRAM__WEBHOOK_SECRET is not set" in result.output
    assert server.calls == []


def test_set_webhook_says_when_telegram_refuses(env, monkeypatch):
    telegram_env(monkeypatch, f"http://127.0.0.1:{free_port()}", WEBHOOK_SECRET=SECRET)
    result = runner.invoke(app, ["bot", "set-webhook", URL])
    assert result.exit_code == 1
    assert "Telegram refused the webhook" in result.output


def test_the_bot_does_not_poll_in_webhook_mode(env, monkeypatch):
    server = FakeTelegram()
    with serving_in_thread(server) as base_url:
        telegram_env(monkeypatch, base_url, MODE="webhook", WEBHOOK_SECRET=SECRET)
        result = runner.invoke(app, ["bot"])
    assert result.exit_code == 2
    assert "TELEGRAM__MODE is webhook" in result.output
    assert "`waimai serve` or `waimai api` serves the bot" in result.output
    assert server.calls == []


def test_webhook_mode_without_a_secret_refuses_to_start(env, monkeypatch):
    def started(*_args: object, **_kwargs: object) -> None:
        pytest.fail("it started")

    async def served(*_args: object) -> None:
        pytest.fail("it started")

    monkeypatch.setattr("uvicorn.run", started)  # what `waimai api` runs
    monkeypatch.setattr("cli.serve._serve", served)
    telegram_env(monkeypatch, "http://127.0.0.1:9", MODE="webhook")
    for command in (["api"], ["serve"], ["bot"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert "TELEGRAM__MODE=webhook needs TELEGRAM__WEBHOOK_SECRET" in result.output


@pytest.mark.slow
def test_serve_in_webhook_mode_serves_the_bot_at_the_webhook(env):
    server = FakeTelegram()
    person = user(4242)
    with serving_in_thread(server) as base_url:
        telegram = {
            "TOKEN": TOKEN,
            "API_BASE": base_url,
            "MODE": "webhook",
            "WEBHOOK_SECRET": SECRET,
            "ACCESS": "open",
        }
        process, port = run_serve(env, {f"TELEGRAM__{k}": v for k, v in telegram.items()})
        message = {"message_id": 1, "date": int(time.time()), "chat": private_chat(person)}
        update = {"update_id": 77, "message": {**message, "from": person, "text": "/help"}}
        answer = httpx.post(
            f"http://127.0.0.1:{port}/telegram/webhook",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
        )
        deadline = time.monotonic() + 30
        while not server.calls_of("sendMessage") and time.monotonic() < deadline:
            time.sleep(0.1)
        output = stop(process)
    assert answer.json() == {"status": "accepted"}, output
    (reply,) = server.calls_of("sendMessage")
    assert reply.params["chat_id"] == person["id"]
    assert server.calls_of("getUpdates") == []
    assert "Telegram bot: webhook, served by the API at POST /telegram/webhook" in output
