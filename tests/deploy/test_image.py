"""docker/Dockerfile and its pinned requirements agree with pyproject.toml: the app image, and
the trainer image (the same plus the train extra, on CUDA). Read as files: nothing is built."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from collections.abc import Iterator

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from core.config import ApiSettings, OpsSettings
from tests.deploy.stack import DOCKER, REPO, SERVICES, SETTINGS, environment

BASE_IMAGE = "python:3.11-slim"
Stage = dict[str, list[str]]


def dockerfile_stages() -> dict[str, Stage]:
    """Each build stage by name: its instructions (``FROM`` first), in order, by kind."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    stages: dict[str, Stage] = {}
    stage: Stage = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            base, _, name = rest.partition(" AS ")
            stage = stages.setdefault(name.strip() or f"stage{len(stages)}", {})
            rest = base.strip()
        stage.setdefault(instruction.upper(), []).append(rest.strip())
    return stages


def effective(name: str) -> Stage:
    """A stage's instructions with those it inherits from the stages it is built on, first."""
    stages = dockerfile_stages()
    base = stages[name]["FROM"][0]
    inherited = effective(base) if base in stages else {}
    return {
        kind: inherited.get(kind, []) + stages[name].get(kind, [])
        for kind in inherited.keys() | stages[name].keys()
    }


def default_target() -> str:
    return list(dockerfile_stages())[-1]


def test_the_images_are_slim_run_as_a_user_and_bake_in_no_setting():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage"
    for name, stage in stages.items():
        assert stage["FROM"][0] in {BASE_IMAGE, *stages}, name
    assert default_target() == "app", "a plain `docker build` gives the app image, no torch"
    for target in ("app", "trainer"):
        image = effective(target)
        assert image["USER"][-1].split(":")[0] not in {"root", "0"}, target
        assert image["ENTRYPOINT"][-1] == '["waimai"]', target
    env_names = {
        pair.split("=", 1)[0]
        for stage in stages.values()
        for env in stage.get("ENV", [])
        for pair in env.split()
    }
    assert not env_names & SETTINGS, env_names & SETTINGS


def test_the_image_installs_the_pinned_requirements_then_the_project_alone():
    build = dockerfile_stages()["build"]
    run = " && ".join(build["RUN"])
    assert "docker/requirements.txt" in " ".join(build["COPY"])
    assert re.search(r"pip install --no-deps .*-r \S*requirements\.txt", run)
    assert re.search(r"pip install --no-deps /src", run)
    assert "pip check" in run
    assert "--from=build /opt/venv" in " ".join(dockerfile_stages()["app"]["COPY"])


def test_the_trainer_image_is_the_app_image_plus_the_pinned_train_extra():
    stages = dockerfile_stages()
    trainer_build, trainer = stages["trainer-build"], stages["trainer"]
    assert trainer_build["FROM"] == ["build"], "the app's venv, with its pins and the project"
    run = " && ".join(trainer_build["RUN"])
    assert "docker/requirements-train.txt" in " ".join(trainer_build["COPY"])
    assert re.search(r"pip install --no-deps .*-r \S*requirements-train\.txt", run)
    assert "pip check" in run
    assert trainer["FROM"] == stages["app"]["FROM"], "the same runtime, user and entrypoint"
    assert "--from=trainer-build /opt/venv" in " ".join(trainer["COPY"])
    assert trainer["CMD"] == ['["worker"]']
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in " ".join(trainer["ENV"])
    assert "HEALTHCHECK" not in effective("trainer"), "the app's probes the API port"


def pinned(lock: str = "requirements.txt") -> dict[str, Requirement]:
    found: dict[str, Requirement] = {}
    for line in (DOCKER / lock).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def runtime_dependencies() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(dependency) for dependency in project["dependencies"]]


def optional_dependencies() -> dict[str, list[Requirement]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {
        extra: [Requirement(dependency) for dependency in dependencies]
        for extra, dependencies in project["optional-dependencies"].items()
    }


def test_every_pin_is_exact_and_regenerated_by_make_lock():
    makefile = (REPO / "Makefile").read_text()
    lock_recipe = re.search(r"^lock:\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert lock_recipe is not None
    for lock in ("requirements.txt", "requirements-train.txt"):
        header = (DOCKER / lock).read_text().splitlines()[:3]
        assert "#    make lock" in header, f"{lock} says how to regenerate it"
        assert f"-o docker/{lock}" in lock_recipe[1], lock
        for name, requirement in pinned(lock).items():
            assert [spec.operator for spec in requirement.specifier] == ["=="], (lock, name)


def test_the_train_lock_keeps_every_app_pin_and_pins_the_train_extra_for_cuda():
    app, train = pinned(), pinned("requirements-train.txt")
    for name, requirement in app.items():
        assert train.get(name) == requirement, f"{name}: the trainer image has other pins"
    for dependency in optional_dependencies()["train"]:
        name = canonicalize_name(dependency.name)
        assert name in train, f"{name} is not in docker/requirements-train.txt: run make lock"
        version = next(iter(train[name].specifier)).version
        assert dependency.specifier.contains(version, prereleases=True), (name, version)
    torch_version = next(iter(train["torch"].specifier)).version
    assert "+" not in torch_version, "PyPI's default torch: the CUDA build, not +cpu"
    assert any(name.startswith("nvidia-cuda-runtime") for name in train), "CUDA comes with it"


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
    extras = optional_dependencies()
    only_theirs = {
        canonicalize_name(d.name) for group in ("dev", "train") for d in extras[group]
    } - runtime_closure()
    assert not only_theirs & set(pinned()), only_theirs & set(pinned())


def test_the_image_healthcheck_probes_healthz_on_the_api_port():
    healthcheck = effective("app")["HEALTHCHECK"][-1]
    assert "/healthz" in healthcheck
    default = re.search(r"""environ\.get\(\s*['"]API__PORT['"],\s*['"](\d+)['"]\)""", healthcheck)
    assert default is not None, "the healthcheck follows API__PORT"
    assert int(default[1]) == ApiSettings().port
    assert "healthcheck" not in SERVICES["api"], "the api uses the image's healthcheck"
    assert SERVICES["migrate"]["healthcheck"] == {"disable": True}
    for name, port in (("bot", OpsSettings().bot_port), ("worker", OpsSettings().worker_port)):
        probe = " ".join(SERVICES[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/healthz" in probe, name
        assert environment(SERVICES[name])["OPS__HOST"] == "0.0.0.0", "reachable from the probe"
    assert SERVICES["trainer"]["healthcheck"] == SERVICES["worker"]["healthcheck"]
