"""docker/Dockerfile and its pinned requirements agree with pyproject.toml."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from collections.abc import Iterator

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from core.config import ApiSettings
from tests.deploy.stack import DOCKER, REPO, SERVICES, SETTINGS


def dockerfile_instructions() -> dict[str, list[str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, rest = line.strip().partition(" ")
            found.setdefault(instruction.upper(), []).append(rest.strip())
    return found


def test_the_image_is_slim_runs_as_a_user_and_bakes_in_no_setting():
    instructions = dockerfile_instructions()
    assert all(image.split()[0] == "python:3.11-slim" for image in instructions["FROM"])
    assert len(instructions["FROM"]) >= 2, "multi-stage"
    user = instructions["USER"][-1].split(":")[0]
    assert user not in {"root", "0"}
    assert instructions["ENTRYPOINT"] == ['["waimai"]']
    env_names = {
        pair.split("=", 1)[0] for env in instructions.get("ENV", []) for pair in env.split()
    }
    assert not env_names & SETTINGS, env_names & SETTINGS


def test_the_image_installs_the_pinned_requirements_then_the_project_alone():
    run = " && ".join(instructions for instructions in dockerfile_instructions()["RUN"])
    assert "docker/requirements.txt" in " ".join(dockerfile_instructions()["COPY"])
    assert re.search(r"pip install --no-deps .*-r \S*requirements\.txt", run)
    assert re.search(r"pip install --no-deps /src", run)
    assert "pip check" in run


def pinned() -> dict[str, Requirement]:
    found: dict[str, Requirement] = {}
    for line in (DOCKER / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def runtime_dependencies() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(dependency) for dependency in project["dependencies"]]


def test_every_pin_is_exact_and_regenerated_by_make_lock():
    header = (DOCKER / "requirements.txt").read_text().splitlines()[:3]
    assert "#    make lock" in header, "the file says how to regenerate it"
    assert re.search(r"^lock:", (REPO / "Makefile").read_text(), re.MULTILINE)
    for name, requirement in pinned().items():
        assert [spec.operator for spec in requirement.specifier] == ["=="], name


def test_every_runtime_dependency_and_its_extras_are_pinned_within_range():
    locked = pinned()
    for dependency in runtime_dependencies():
        name = canonicalize_name(dependency.name)
        assert name in locked, f"{name} is not in docker/requirements.txt: run make lock"
        version = next(iter(locked[name].specifier)).version
        assert dependency.specifier.contains(version, prereleases=True), (name, version)
        for extra in sorted(dependency.extras):
            for needed in requirements_of_extra(dependency.name, extra):
                assert canonicalize_name(needed.name) in locked, f"{name}[{extra}]: {needed}"


def requirements_of_extra(distribution: str, extra: str) -> Iterator[Requirement]:
    """What ``distribution[extra]`` adds, here (Linux, CPython 3.11, as in the image)."""
    for line in importlib.metadata.requires(distribution) or []:
        requirement = Requirement(line)
        marker = requirement.marker
        extra_only = marker is not None and not marker.evaluate({"extra": ""})
        if extra_only and marker is not None and marker.evaluate({"extra": extra}):
            yield requirement


def runtime_closure() -> set[str]:
    """Every distribution the runtime dependencies need here (Linux, CPython 3.11)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(d.name, frozenset(d.extras)) for d in runtime_dependencies()]
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in {"", *extras}):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return {name for name, _ in seen}


def test_no_package_only_dev_or_train_needs_is_in_the_image():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    only_theirs = {
        canonicalize_name(Requirement(d).name) for group in ("dev", "train") for d in extras[group]
    } - runtime_closure()
    assert not only_theirs & set(pinned()), only_theirs & set(pinned())


def test_the_image_healthcheck_probes_healthz_on_the_api_port():
    healthcheck = dockerfile_instructions()["HEALTHCHECK"][-1]
    assert "/healthz" in healthcheck
    default = re.search(r"""environ\.get\(\s*['"]API__PORT['"],\s*['"](\d+)['"]\)""", healthcheck)
    assert default is not None, "the healthcheck follows API__PORT"
    assert int(default[1]) == ApiSettings().port
    assert "healthcheck" not in SERVICES["api"], "the api uses the image's healthcheck"
    for name in ("bot", "worker", "migrate"):
        assert SERVICES[name]["healthcheck"] == {"disable": True}, name
