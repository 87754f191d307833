"""All settings in one place: environment variables (``SECTION__NAME``) and an optional ``.env``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "placeholder", "secret", "xxx"})

BackendName = Literal["local"]


class DBSettings(BaseModel):
    url: str = "sqlite:///./data/waimai.db"
    busy_timeout_ms: int = Field(default=5000, ge=0)
    echo: bool = False


class DataSettings(BaseModel):
    dir: Path = Path("data")
    source: str | None = None
    """A path or URL of waimai_10k.csv; unset means: the local copies, then the public URL."""
    download_timeout_s: float = Field(default=60.0, gt=0)


class ServingSettings(BaseModel):
    fallbacks: list[BackendName] = ["local"]
    """Tried in order when the one before gives no usable answer."""
    max_text_chars: int = Field(default=2000, ge=1)


class LocalModelSettings(BaseModel):
    dir: Path = Path("models/local")
    """Artifacts are written here and loaded only from here."""
    ngram_max: int = Field(default=4, ge=1, le=6)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
    )

    env: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"
    db: DBSettings = DBSettings()
    data: DataSettings = DataSettings()
    serving: ServingSettings = ServingSettings()
    local: LocalModelSettings = LocalModelSettings()

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.env == "development":
            return self
        bad = [
            name for name, value in _secrets(self) if value.strip().lower() in PLACEHOLDER_SECRETS
        ]
        if bad:
            raise ValueError(
                f"placeholder secrets are refused outside development: {', '.join(bad)}; "
                "set real values or ENV=development"
            )
        return self


def _secrets(model: BaseModel, prefix: str = "") -> list[tuple[str, str]]:
    """Every ``SecretStr`` field of ``model`` and its sections, as (ENV__NAME, value)."""
    found: list[tuple[str, str]] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        env_name = f"{prefix}{name}".upper()
        if isinstance(value, SecretStr):
            found.append((env_name, value.get_secret_value()))
        elif isinstance(value, BaseModel):
            found.extend(_secrets(value, f"{env_name}__"))
    return found


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use (never at import time)."""
    return Settings()
