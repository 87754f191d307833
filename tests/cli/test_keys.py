"""``waimai keys`` and ``waimai api`` as an operator runs them, on a copy of a trained store."""

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from core.config import get_settings
from core.wiring import Core

runner = CliRunner()


@pytest.fixture
def env(core: Core, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    variables = {
        "DB__URL": core.settings.db.url,
        "LOCAL__DIR": str(core.settings.local.dir),
        "DATA__DIR": str(tmp_path / "data"),
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield variables
    get_settings.cache_clear()


def waimai(*args: str):
    return runner.invoke(app, list(args))


def test_keys_are_created_shown_once_listed_and_revoked(env):
    created = waimai("keys", "create", "--name", "acme")
    assert created.exit_code == 0, created.output
    key = re.search(r"API key:\s+(wmk_\S+)", created.output)
    secret = re.search(r"webhook secret:\s+(whsec_\S+)", created.output)
    assert key and secret
    admin = waimai("keys", "create", "--name", "ops", "--role", "admin")
    assert "(admin)" in admin.output

    listed = waimai("keys", "list")
    assert listed.exit_code == 0
    assert "acme" in listed.output and "ops" in listed.output
    assert key.group(1) not in listed.output

    again = waimai("keys", "create", "--name", "acme")
    assert again.exit_code == 1
    assert "exists already" in again.output

    new_key = waimai("keys", "rotate", "acme", "--grace-hours", "0")
    assert new_key.exit_code == 0, new_key.output
    assert "refused from now on" in new_key.output
    assert re.search(r"new API key:\s+wmk_\S+", new_key.output)
    assert key.group(1) not in new_key.output

    rotated = waimai("keys", "rotate-secret", "acme")
    assert "whsec_" in rotated.output and secret.group(1) not in rotated.output

    assert waimai("keys", "revoke", "acme").exit_code == 0
    assert "revoked" in waimai("keys", "list").output
    twice = waimai("keys", "revoke", "acme")
    assert twice.exit_code == 1
    assert "already revoked" in twice.output


@pytest.mark.slow
def test_waimai_api_serves_the_api(env):
    key = re.search(r"wmk_\S+", waimai("keys", "create", "--name", "shop").output)
    assert key
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    waimai_command = Path(sys.executable).parent / "waimai"
    server = subprocess.Popen(
        [str(waimai_command), "api", "--port", str(port), "--no-access-log"],
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                if httpx.get(f"{base_url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "waimai api did not start"
                time.sleep(0.2)
        answer = httpx.post(
            f"{base_url}/v1/classify",
            json={"reviews": [{"text": "味道不错，分量足"}]},
            headers={"Authorization": f"Bearer {key.group(0)}"},
        )
        assert answer.status_code == 200
        assert answer.json()["results"][0]["label"] == "positive"
    finally:
        server.terminate()
        server.wait(timeout=30)
