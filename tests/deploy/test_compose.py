"""docker/compose.yaml agrees with the code, read as a file (no Docker engine needed): commands are
resolved against ``waimai``, variables against the settings, and ports, volumes and dependencies
against each other.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from core.config import ApiSettings
from tests.deploy.stack import (
    APP_SERVICES,
    COMPOSE,
    COMPOSE_TEXT,
    DOCKER,
    INTERPOLATION,
    SERVICES,
    SETTINGS,
    api_port,
    assert_real_command,
    command,
    environment,
    is_secret,
    mounts,
    named_volumes,
    option,
)
from tests.deploy.test_image import dockerfile_stages


def test_the_compose_file_is_a_compose_spec_file_with_the_expected_services():
    assert "version" not in COMPOSE
    assert set(COMPOSE) - {"name", "services", "volumes", "networks", "configs", "secrets"} <= {
        key for key in COMPOSE if key.startswith("x-")
    }
    assert {"api", "bot", "worker", "migrate", "postgres", "vllm", "trainer"} <= set(SERVICES)
    assert APP_SERVICES == ["api", "bot", "migrate", "trainer", "worker"]
    assert SERVICES["api"]["deploy"]["replicas"] == 2
    assert "ports" not in SERVICES["api"], "replicas cannot share a published host port"
    assert SERVICES["bot"]["profiles"] == ["polling"]
    assert SERVICES["vllm"]["profiles"] == ["gpu"]
    assert SERVICES["trainer"]["profiles"] == ["gpu"]
    assert SERVICES["postgres"]["image"].startswith("postgres:16")
    assert SERVICES["vllm"]["image"].startswith("vllm/vllm-openai:")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_app_service_runs_a_real_waimai_command(name: str):
    service = SERVICES[name]
    build = {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert service["build"] == (build | {"target": "trainer"} if name == "trainer" else build)
    assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    assert service["env_file"] == "../.env"
    assert_real_command(command(service), parse=True)


def test_the_roles_are_the_commands_asked_for():
    assert command(SERVICES["api"])[:1] == ["api"]
    assert option(command(SERVICES["api"]), "--host") == "0.0.0.0"
    assert command(SERVICES["bot"]) == ["bot"]
    assert command(SERVICES["worker"]) == ["worker"]
    assert command(SERVICES["trainer"]) == ["worker"]
    assert command(SERVICES["migrate"]) == ["db", "upgrade"]
    assert SERVICES["migrate"]["restart"] == "no"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_variable_the_stack_sets_is_a_real_setting(name: str):
    names = set(environment(SERVICES[name]))
    if name in APP_SERVICES:
        assert names <= SETTINGS, names - SETTINGS
    else:
        assert {n for n in names if "__" in n} <= SETTINGS


def test_every_setting_the_compose_file_interpolates_is_a_real_one():
    """The vLLM server is started from the same settings as the app (VLLM__BASE_MODEL, ...)."""
    names = {m["name"] for m in INTERPOLATION.finditer(COMPOSE_TEXT) if "__" in m["name"]}
    assert names, "the vllm service reads the VLLM__ settings"
    assert names <= SETTINGS, names - SETTINGS


def test_the_ports_agree():
    api = SERVICES["api"]
    port = api_port()
    assert [str(p) for p in api["expose"]] == [str(port)]
    assert option(command(api), "--port") in (None, str(port))

    caddyfile = (DOCKER / "Caddyfile").read_text()
    upstream = re.search(r"dynamic a (\S+) (\d+)", caddyfile)
    assert upstream is not None
    assert upstream.groups() == ("api", str(port))
    site = re.search(r"^:(\d+) \{", caddyfile, re.MULTILINE)
    assert site is not None
    assert [str(p).split(":")[-1] for p in SERVICES["proxy"]["ports"]] == [site[1]]

    vllm_url = urlsplit(environment(SERVICES["worker"])["VLLM__BASE_URL"])
    assert vllm_url.hostname == "vllm"
    assert option(command(SERVICES["vllm"]), "--port") == str(vllm_url.port)
    assert [str(p) for p in SERVICES["vllm"]["expose"]] == [str(vllm_url.port)]

    db_url = urlsplit(INTERPOLATION.sub("x", environment(SERVICES["worker"])["DB__URL"]))
    assert db_url.hostname == "postgres"
    assert db_url.port == 5432


def test_the_api_gets_longer_to_stop_than_it_takes_to_drain():
    grace = SERVICES["api"]["stop_grace_period"]
    assert grace.endswith("s")
    assert int(grace[:-1]) > ApiSettings().shutdown_timeout_s


def test_every_named_volume_is_declared_and_every_declared_one_used():
    used = set().union(*(named_volumes(service) for service in SERVICES.values()))
    assert used == set(COMPOSE["volumes"])
    for service in SERVICES.values():
        for source in mounts(service).values():
            if source.startswith("."):
                assert (DOCKER / source).exists(), source


def test_the_adapter_volume_is_where_the_vllm_settings_say():
    env = environment(SERVICES["worker"])
    worker, server = mounts(SERVICES["worker"]), mounts(SERVICES["vllm"])
    volume = worker[env["VLLM__ADAPTER_DIR"]]
    assert volume in COMPOSE["volumes"]
    assert server[env["VLLM__SERVER_ADAPTER_DIR"]] == volume
    assert mounts(SERVICES["trainer"])[env["VLLM__ADAPTER_DIR"]] == volume, "it writes them"
    assert all(
        environment(SERVICES[n])["VLLM__SERVER_ADAPTER_DIR"] == "/adapters"
        for n in ("api", "worker", "trainer")
    )


def test_the_trainer_is_the_worker_built_with_cuda_torch_on_a_gpu():
    trainer, worker = SERVICES["trainer"], SERVICES["worker"]
    assert trainer["build"]["target"] in dockerfile_stages()
    assert trainer["image"] != worker["image"], "the app image stays without torch"
    assert environment(trainer) == environment(worker), "the same settings and places"
    assert "RETRAIN__BACKEND" not in environment(trainer), "RETRAIN__BACKEND comes from .env"
    assert {t: s for t, s in mounts(trainer).items() if s != "trainer-cache"} == mounts(worker)
    cache = next(t for t, s in mounts(trainer).items() if s == "trainer-cache")
    assert "HF_HOME=" + cache in " ".join(dockerfile_stages()["trainer"]["ENV"])
    for same in ("stop_grace_period", "healthcheck", "expose", "depends_on"):
        assert trainer.get(same) == worker.get(same), same
    [gpu] = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia"
    assert gpu["capabilities"] == ["gpu"]
    assert len(gpu["device_ids"]) == 1, "one GPU, chosen with TRAINER_GPU"


def test_the_models_the_worker_trains_are_the_ones_the_api_and_bot_load():
    def volume_holding(name: str, path: str) -> str:
        for target, source in mounts(SERVICES[name]).items():
            if Path(path).is_relative_to(target):
                return source
        raise AssertionError(f"{name}: {path} is on no volume")

    for setting in ("LOCAL__DIR", "DATA__DIR"):
        path = environment(SERVICES["worker"])[setting]
        assert Path(path).is_absolute()
        held = {volume_holding(name, path) for name in ("api", "bot", "worker")}
        assert len(held) == 1 and held <= set(COMPOSE["volumes"]), (setting, held)


def test_depends_on_names_real_services_and_waits_for_them():
    for name, service in SERVICES.items():
        depends = service.get("depends_on") or {}
        for dependency, how in depends.items():
            assert dependency in SERVICES, (name, dependency)
            assert set(SERVICES[dependency].get("profiles", [])) <= set(
                service.get("profiles", [])
            ), f"{name} would need {dependency}'s profile"
            assert how["condition"] in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }
    for name in ("api", "bot", "worker", "trainer"):
        assert SERVICES[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
    assert SERVICES["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "pg_isready" in SERVICES["postgres"]["healthcheck"]["test"]


def test_no_secret_has_a_value_or_a_default_in_the_file():
    for match in INTERPOLATION.finditer(COMPOSE_TEXT):
        if is_secret(match["name"]) and match["op"] in {"-", ":-"}:
            assert match["arg"] == "", f"{match[0]}: a secret with a default"
    for name, service in SERVICES.items():
        for key, value in environment(service).items():
            if is_secret(key):
                assert INTERPOLATION.fullmatch(value), f"{name}: {key} has a literal value"
    password = re.search(r"\$\{POSTGRES_PASSWORD(?P<op>[^}]*)\}", COMPOSE_TEXT)
    assert password is not None
    assert password["op"].startswith(":?"), "POSTGRES_PASSWORD is required, without a default"
    db_password = re.search(r"//waimai:(.*)@postgres", environment(SERVICES["api"])["DB__URL"])
    assert db_password is not None
    assert INTERPOLATION.fullmatch(db_password[1])
