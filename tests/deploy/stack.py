"""The production stack as files: docker/compose.yaml read once, and the ``waimai`` command
that its services and the runbook name, resolved without running anything."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import typer
import yaml
from pydantic import BaseModel, SecretStr
from typer.testing import CliRunner

from cli.main import app
from core.config import ApiSettings, Settings
from tests.test_env_example import setting_names

if TYPE_CHECKING:
    from typer._click.core import Command

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_TEXT = (DOCKER / "compose.yaml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP_SERVICES = sorted(name for name, service in SERVICES.items() if "build" in service)
SETTINGS = setting_names(Settings)

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)
SECRET_LOOKING = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY")


def secret_settings(model: type[BaseModel], prefix: str = "") -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= secret_settings(annotation, f"{prefix}{name.upper()}__")
        elif SecretStr in (annotation, *get_args(annotation)):
            names.add(f"{prefix}{name.upper()}")
    return names


SECRETS = secret_settings(Settings)


def is_secret(name: str) -> bool:
    return name in SECRETS or bool(SECRET_LOOKING.search(name))


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    value = service.get("command") or []
    return shlex.split(value) if isinstance(value, str) else [str(arg) for arg in value]


def option(args: list[str], name: str) -> str | None:
    """The value of ``--name V`` or ``--name=V`` in ``args``."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target → source of each volume or bind mount."""
    found = {}
    for mount in service.get("volumes") or []:
        if isinstance(mount, str):
            source, target = mount.split(":")[:2]
        else:
            source, target = mount.get("source", ""), mount["target"]
        found[target] = source
    return found


def named_volumes(service: dict[str, Any]) -> set[str]:
    return {s for s in mounts(service).values() if s and not s.startswith((".", "/", "~", "$"))}


def api_port() -> int:
    return int(environment(SERVICES["api"]).get("API__PORT", ApiSettings().port))


def resolve(args: list[str]) -> tuple[list[str], Command, list[str]]:
    """The subcommand path of ``waimai args``, the command it names and the arguments left."""
    found = typer.main.get_command(app)
    path, rest = [], list(args)
    while isinstance(found, typer.core.TyperGroup) and rest and rest[0] in found.commands:
        path.append(rest[0])
        found = found.commands[rest.pop(0)]
    return path, found, rest


def assert_real_command(args: list[str], *, parse: bool) -> None:
    """``waimai args`` names a real command with real options; with ``parse``, the arguments are
    parsed too (not for documentation, whose placeholders would not convert)."""
    path, found, rest = resolve(args)
    assert path, f"`waimai {shlex.join(args)}` names no command"
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    options = {opt for param in found.params for opt in (*param.opts, *param.secondary_opts)}
    for arg in rest:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in options, f"`waimai {shlex.join(args)}`: no {arg}"
    if isinstance(found, typer.core.TyperGroup):
        assert not [a for a in rest if not a.startswith("-")], f"`waimai {shlex.join(args)}`"
    if parse:
        found.make_context(" ".join(["waimai", *path]), rest)
