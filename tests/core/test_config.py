from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from core.config import Settings, get_settings


class WithSecret(Settings):
    token: SecretStr = SecretStr("change-me")


def test_nested_sections_come_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DB__URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("SERVING__MAX_TEXT_CHARS", "300")
    settings = Settings(_env_file=None)
    assert settings.db.url == "postgresql+psycopg://u@h/db"
    assert settings.serving.max_text_chars == 300


def test_a_dotenv_file_is_read(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("LOCAL__DIR=/srv/models\nLOG_LEVEL=DEBUG\n")
    settings = Settings(_env_file=env_file)
    assert settings.local.dir == Path("/srv/models")
    assert settings.log_level == "DEBUG"


def test_defaults_run_on_a_laptop():
    settings = Settings(_env_file=None)
    assert settings.db.url.startswith("sqlite:///./data/")
    assert settings.serving.fallbacks == ["local"]


def test_placeholder_secrets_are_refused_outside_development():
    assert WithSecret(_env_file=None, env="development").token.get_secret_value() == "change-me"
    with pytest.raises(ValidationError, match="TOKEN"):
        WithSecret(_env_file=None, env="production")
    assert WithSecret(_env_file=None, env="production", token=SecretStr("s3cr3t-Value"))


def test_the_builder_is_cached_and_builds_nothing_at_import(monkeypatch: pytest.MonkeyPatch):
    get_settings.cache_clear()
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    try:
        assert get_settings() is get_settings()
        assert get_settings().log_level == "WARNING"
    finally:
        get_settings.cache_clear()
