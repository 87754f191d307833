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


class RetrainSettings(BaseModel):
    """The learning loop: when it runs, which labels it trusts, when a new model wins."""

    backend: BackendName = "local"
    """Which trainer the scheduled retrain uses."""
    cron: str = "0 3 * * *"
    timezone: str = "Asia/Shanghai"
    label_threshold: int = Field(default=200, ge=1)
    """A retrain also starts once this many human labels arrived since the active model."""
    check_every_minutes: float = Field(default=5.0, gt=0)
    leader_retry_s: float = Field(default=15.0, gt=0)
    """How often a worker that is not the leader tries to become it."""
    quorum: int = Field(default=2, ge=1)
    trusted_at: float = Field(default=0.8, ge=0, le=1)
    """A merchant whose labels agree this often (smoothed) is trusted on their own."""
    daily_cap: int = Field(default=500, ge=1)
    burst_limit: int = Field(default=100, ge=1)
    """More corrections than this from one actor in a day are held back as a burst."""
    margin: float = Field(default=0.005, ge=0)
    """A candidate may be at most this much less accurate than the active model."""
    alpha: float = Field(default=0.05, gt=0, lt=1)
    """Significance level of the McNemar test that a candidate is worse."""


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
    retrain: RetrainSettings = RetrainSettings()

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
