"""Every command the deployment runbook (docs/deployment.md) gives is a real one."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator

from tests.deploy.stack import APP_SERVICES, REPO, SERVICES, assert_real_command


def runbook() -> str:
    """docs/deployment.md, the runbook."""
    return (REPO / "docs" / "deployment.md").read_text()


VALUE_FLAGS = {"-f", "--file", "--env-file", "-p", "--project-name", "--profile", "-e", "--env"}
VALUE_FLAGS |= {"-v", "--volume", "-u", "--user", "-w", "--workdir", "--entrypoint", "--name"}
VALUE_FLAGS |= {"--index", "--scale"}


def skip_flags(tokens: list[str]) -> list[str]:
    while tokens and tokens[0].startswith("-"):
        tokens = tokens[2:] if tokens[0] in VALUE_FLAGS else tokens[1:]
    return tokens


def shell_commands(line: str) -> Iterator[list[str]]:
    """The simple commands of one shell line, split at ``&&``, ``||``, ``;`` and ``|``."""
    words: list[str] = []
    for token in shlex.split(line, comments=True):
        if token in {"&&", "||", ";", "|"}:
            yield words
            words = []
        else:
            words.append(token)
    yield words


def documented_commands() -> Iterator[tuple[str, list[str]]]:
    """(service or "", waimai arguments) for each command in the runbook, in its shell blocks
    and its inline code; a ``run`` without arguments (the service's own command) is left out."""
    text = runbook()
    lines = [
        line
        for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
        for line in block.splitlines()
    ]
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
    for line in lines:
        for words in shell_commands(line):
            if words[:1] == ["waimai"]:
                yield "", words[1:]
                continue
            if words[:1] == ["dc"]:
                words = skip_flags(words[1:])
            elif words[:2] == ["docker", "compose"]:
                words = skip_flags(words[2:])
            else:
                continue
            target = skip_flags(words[1:])
            if words[:1] not in (["run"], ["exec"]) or not target:
                continue
            service, *args = target
            assert service in SERVICES, line
            if service not in APP_SERVICES:
                continue
            if words[0] == "exec":
                assert args[:1] == ["waimai"], line
                args = args[1:]
            if args:
                yield service, args


def test_every_command_in_the_runbook_is_real():
    commands = list(documented_commands())
    assert ("worker", ["train", "local", "--if-none-active"]) in commands
    assert any(args[:2] == ["keys", "create"] for _, args in commands)
    for _, args in commands:
        assert_real_command(args, parse=False)
