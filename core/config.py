"""All settings in one place: environment variables (``SECTION__NAME``) and an optional ``.env``.

Past 300 lines because it is that one place: every setting, its default and what it means.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "placeholder", "secret", "xxx"})

BackendName = Literal["local", "zhipu", "vllm"]
TrainerName = Literal["local", "zhipu", "lora"]
"""What a retrain can train: the CPU model, a Zhipu fine-tune, or a LoRA adapter for vLLM."""
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
MIN_SESSION_SECRET_CHARS = 32


class DBSettings(BaseModel):
    url: str = "sqlite:///./data/waimai.db"
    busy_timeout_ms: int = Field(default=5000, ge=0)
    echo: bool = False
    pool_size: int = Field(default=5, ge=1)
    """PostgreSQL: connections each process keeps open (SQLite ignores the pool settings)."""
    max_overflow: int = Field(default=10, ge=0)
    """PostgreSQL: connections opened beyond ``pool_size`` under load, closed when returned."""
    pool_timeout_s: float = Field(default=30.0, gt=0)
    """PostgreSQL: how long a request waits for a free connection before it fails."""
    connect_timeout_s: int = Field(default=5, ge=1)
    """PostgreSQL: how long opening a connection may take; an unreachable server is then a 503
    within seconds rather than a request hanging for minutes."""
    pool_recycle_s: float = Field(default=1800.0, gt=0)
    """PostgreSQL: a connection older than this is replaced (before a proxy or a firewall drops
    it)."""


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
    views_loaded: int = Field(default=16, ge=1)
    """Tenants' own views kept in memory (~40 MB each); others load again when next used."""


class ZhipuSettings(BaseModel):
    """The Zhipu GLM cloud: inference through the zhipuai SDK and fine-tune jobs."""

    api_key: SecretStr | None = None
    """Unset: the Zhipu backend is not configured (a Zhipu model version then falls back)."""
    base_url: str = "https://open.bigmodel.cn/api/paas/v4"
    model: str = "glm-4-flash"
    """What ``waimai models add zhipu`` registers when no model name is given."""
    timeout_s: float = Field(default=30.0, gt=0)
    max_concurrency: int = Field(default=32, ge=1)
    max_rps: float = Field(default=100.0, gt=0)
    retries: int = Field(default=3, ge=0)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=8.0, gt=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=30.0, gt=0)
    account_pause_s: float = Field(default=3600.0, gt=0)
    """How long calls stop after a used-up quota (1304/1308/1310) or a locked account
    (1112/1121) when Zhipu's message names no reset time; a stated reset time wins."""
    disable_thinking: bool | None = None
    """Send ``thinking: {"type": "disabled"}``; unset: to models named GLM-4.5 or later (those
    that take it). Set true for a deployed reasoning model with a code of its own."""
    finetune_base_model: str = "glm-4-flash"
    """A base model: Zhipu fine-tunes no earlier fine-tuned model."""
    finetune_method: Literal["lora", "full"] = "lora"
    """What the base model's jobs produce. A text LoRA fine-tune answers on Zhipu's shared pool
    at once and is registered as a candidate; any other must first be deployed in the console,
    and its deployment's model code is registered by hand (``waimai models add zhipu CODE --job
    ID``). Not sent: neither the SDK nor the docs define a switch; models that offer only full
    fine-tuning (glm-4-air-250414, glm-4.5-air) need ``full`` here."""
    finetune_suffix: str = Field(default="waimai", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    n_epochs: int = Field(default=3, ge=1)
    batch_size: int | Literal["auto"] = "auto"
    learning_rate_multiplier: float | Literal["auto"] = "auto"
    price_per_1k_tokens: float = Field(default=0.013, ge=0)
    """Yuan per 1,000 training tokens as counted here (a character a token, plus 4 a message).
    Calibrated on what Zhipu's console charged for a LoRA of glm-4-flash over the canonical
    8,390-row train split, 6.0972 yuan an epoch: that split counts 469,415 tokens."""
    finetune_budget: float = Field(default=20.0, ge=0)
    """The most, in yuan, one fine-tune job may cost by its estimate; above it, none starts."""
    monthly_budget: float = Field(default=60.0, ge=0)
    """The most, in yuan, the fine-tunes launched in a calendar month (RETRAIN__TIMEZONE) may
    cost by their estimates; a job that would pass it is not launched, and the admins hear so
    once a month."""
    finetune_min_new_labels: int = Field(default=500, ge=0)
    """A fine-tune trains the base model on the whole snapshot again, so another is launched
    only when this many examples are new since the last one that succeeded."""
    poll_interval_s: float = Field(default=30.0, gt=0)


class TelegramSettings(BaseModel):
    """The merchants' Telegram bot."""

    token: SecretStr | None = None
    """From @BotFather; unset: the bot is off."""
    api_base: str = "https://api.telegram.org"
    """A self-hosted Bot API server (bigger files) or a local fake, instead of Telegram's."""
    bot_username: str | None = None
    """For invite links when getMe cannot be reached; unset: asked from getMe."""
    access: Literal["open", "allowlist", "invite"] = "invite"
    allowlist: list[int] = []
    """Telegram user ids admitted in ``allowlist`` mode."""
    admins: list[int] = []
    """Telegram user ids that are always admitted and may use /model and /retrain."""
    callback_secret: SecretStr | None = None
    """HMAC key for inline-button data; unset: derived from the token."""
    button_ttl_hours: float = Field(default=168.0, gt=0)
    undo_minutes: float = Field(default=10.0, gt=0)
    throttle_messages: int = Field(default=20, ge=1)
    """Updates a chat has handled at most in ``throttle_window_s``; more wait in line."""
    throttle_window_s: float = Field(default=60.0, gt=0)
    queue_messages: int = Field(default=100, ge=0)
    """Messages over the throttle a chat may have waiting in line; one more is not taken, and
    the merchant is told which."""
    max_file_mb: float = Field(default=20.0, gt=0)
    batch_chunk_size: int = Field(default=500, ge=1)
    progress_interval_s: float = Field(default=3.0, ge=0)
    polling_timeout_s: int = Field(default=30, ge=0)
    mode: Literal["polling", "webhook"] = "polling"
    """polling: the bot asks Telegram for updates; webhook: Telegram posts them to the API
    (``POST /telegram/webhook``, registered with ``waimai bot set-webhook URL``)."""
    webhook_secret: SecretStr | None = None
    """Telegram sends it with every webhook request; required in webhook mode."""
    notify_poll_s: float = Field(default=2.0, gt=0)
    """How often a process running the bot looks for news for the admins that another process
    published (a retrain the worker finished)."""

    @field_validator("webhook_secret")
    @classmethod
    def _a_secret_telegram_accepts(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and not _WEBHOOK_SECRET.fullmatch(secret.get_secret_value()):
            raise ValueError(
                "TELEGRAM__WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and -"
            )
        return secret

    @model_validator(mode="after")
    def _webhook_mode_needs_a_secret(self) -> TelegramSettings:
        if self.mode == "webhook" and self.token is not None and self.webhook_secret is None:
            raise ValueError(
                "TELEGRAM__MODE=webhook needs TELEGRAM__WEBHOOK_SECRET, so that only Telegram "
                "can post updates (e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return self


class ApiSettings(BaseModel):
    """The HTTP API for platforms (``waimai api``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    rate_limit: str = Field(default="100/second", pattern=r"^[1-9][0-9]*/(second|minute|hour)$")
    """Requests each API key may make, e.g. ``100/second`` or ``3000/minute``."""
    key_cache_s: float = Field(default=10.0, ge=0)
    """How long a checked key is trusted without asking the store (a revocation made by
    another process takes effect within this time)."""
    bench_echo: bool = False
    """Serve ``POST /bench/echo`` for bench/api_load.py; refused in production."""
    shutdown_timeout_s: int = Field(default=30, ge=1)
    """On SIGTERM new connections are refused and requests in flight get this long to finish."""
    session_secret: SecretStr | None = None
    """Signs the operator page's session cookies (/admin). Unset: a random key made at start-up,
    so logins end with the process and one API replica refuses another's: set it when several
    serve the page."""
    session_hours: float = Field(default=8.0, gt=0)
    """How long a login to the operator page lasts."""
    session_cookie_secure: bool = True
    """Send the session cookie over HTTPS only (browsers also send it to http://localhost and
    http://127.0.0.1); false for the page on a plain-HTTP address elsewhere."""

    @field_validator("session_secret")
    @classmethod
    def _a_secret_long_enough_to_sign_with(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value()) < MIN_SESSION_SECRET_CHARS:
            raise ValueError(
                f"API__SESSION_SECRET must be at least {MIN_SESSION_SECRET_CHARS} characters (e.g. "
                "the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return secret


class RetrainSettings(BaseModel):
    """The learning loop: when it runs, which labels it trusts, when a new model wins."""

    backend: TrainerName = "local"
    """Which trainer a retrain uses: the CPU model, a Zhipu fine-tune, or a LoRA for vLLM."""
    cron: str = "0 3 * * *"
    timezone: str = "Asia/Shanghai"
    label_threshold: int = Field(default=200, ge=1)
    """A retrain also starts once this many human labels arrived since the active model."""
    check_every_s: float = Field(default=10.0, gt=0)
    """How often the worker looks for retrain requests and counts new labels (two small
    queries), so that a threshold reached is acted on within seconds."""
    leader_retry_s: float = Field(default=15.0, gt=0)
    """How often a worker that is not the leader tries to become it."""
    quorum: int = Field(default=2, ge=1)
    """How many tenants must give a label before it joins the shared model without an admin
    or the dataset behind it (1: every tenant's labels join it, for a single-tenant install)."""
    flag_below: float = Field(default=0.6, ge=0, le=1)
    """A tenant whose labels agree less often than this with independent evidence is flagged."""
    min_evidence: int = Field(default=10, ge=1)
    """How many of a tenant's labels must have independent evidence before it can be flagged."""
    implicit_confirmations: bool = True
    """A verdict a tenant was shown before its latest label, and left alone, counts as a
    confirmation in that tenant's own view."""
    view_margin: float = Field(default=0.02, ge=0)
    """A tenant's own view may be at most this much less accurate on the holdout than the
    shared model, or it is not served."""
    margin: float = Field(default=0.005, ge=0)
    """A candidate may be at most this much less accurate than the active model."""
    alpha: float = Field(default=0.05, gt=0, lt=1)
    """Significance level of the McNemar test that a candidate is worse."""


class VllmSettings(BaseModel):
    """A vLLM server (OpenAI-compatible) serving LoRA adapters, and the LoRA trainer."""

    base_url: str = "http://127.0.0.1:8001"
    """The server's root (the client adds ``/v1/...``)."""
    api_key: SecretStr | None = None
    """What the server was started with (``--api-key``); unset: none is sent."""
    timeout_s: float = Field(default=5.0, gt=0)
    """The most one review's request may take, retries included: a hung server costs this much
    before the fallback answers."""
    concurrency: int = Field(default=64, ge=1)
    retries: int = Field(default=2, ge=0)
    breaker_failures: int = Field(default=5, ge=1)
    """Consecutive failed requests (no answer in time, a 5xx) that open the circuit breaker: it
    stops all calls for ``breaker_reset_s``, then lets one go, whose outcome decides."""
    breaker_reset_s: float = Field(default=30.0, gt=0)
    base_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    """The base model the server runs and adapters are trained on: a hub name or a local path."""
    adapter_dir: Path = Path("models/lora")
    """Each adapter version is written to a new folder here."""
    server_adapter_dir: str | None = None
    """Where the server sees ``adapter_dir`` (e.g. a container mount); unset: the same path."""
    lora_rank: int = 8
    """8, 16, 32 or 64 (ranks vLLM serves); also the server's ``--max-lora-rank``."""
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    epochs: float = Field(default=1.0, gt=0)
    learning_rate: float = Field(default=2e-4, gt=0)
    batch_size: int = Field(default=8, ge=1)
    """Examples per forward pass of the LoRA trainer (a micro-batch)."""
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    """Micro-batches whose gradients make one optimizer step: the effective batch is
    ``batch_size`` times this, in the memory of one micro-batch."""
    gradient_checkpointing: bool = False
    """Recompute each block's activations in the backward pass instead of keeping them: a third
    more compute a step, and what should let a 7–9B base train on a 24–48 GB GPU (batch 1–4)."""
    max_seq_len: int = Field(default=512, ge=16)
    """Training examples longer than this many tokens are skipped; also ``--max-model-len``."""

    @field_validator("lora_rank")
    @classmethod
    def _a_rank_vllm_serves(cls, rank: int) -> int:
        if rank not in (8, 16, 32, 64):
            raise ValueError("the LoRA rank must be 8, 16, 32 or 64")
        return rank

    def adapter_path_on_server(self, name: str) -> str:
        """Adapter ``name``'s folder as the server sees it."""
        if self.server_adapter_dir:
            return f"{self.server_adapter_dir.rstrip('/')}/{name}"
        return str((self.adapter_dir / name).resolve())


class OpsSettings(BaseModel):
    """The metrics and health port of the processes that serve no API (0 turns it off)."""

    host: str = "127.0.0.1"
    worker_port: int = Field(default=9101, ge=0, le=65535)
    """``waimai worker``: /metrics, /healthz and /readyz."""
    bot_port: int = Field(default=9102, ge=0, le=65535)
    """``waimai bot`` (polling, without the API beside it): the same."""


class AlertSettings(BaseModel):
    """Drift: admins are told once when a rolling rate rises above its threshold."""

    correction_rate: float = Field(default=0.3, gt=0, le=1)
    """A merchant's share of labelled predictions that its labels correct."""
    min_labels: int = Field(default=20, ge=1)
    """Labels in the window before a merchant's correction rate can raise an alert."""
    fallback_rate: float = Field(default=0.2, gt=0, le=1)
    """The share of reviews a fallback model answered."""
    min_predictions: int = Field(default=200, ge=1)
    """Predictions in the window before the fallback share can raise an alert."""
    window_hours: float = Field(default=24.0, gt=0)
    check_every_s: float = Field(default=300.0, gt=0)


class StatsSettings(BaseModel):
    rollup_every_s: float = Field(default=300.0, gt=0)
    """How often the worker counts the earlier days again into the stats' day tables (a label
    on an earlier day's review shows in the stats after it)."""


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
    zhipu: ZhipuSettings = ZhipuSettings()
    telegram: TelegramSettings = TelegramSettings()
    api: ApiSettings = ApiSettings()
    vllm: VllmSettings = VllmSettings()
    ops: OpsSettings = OpsSettings()
    alerts: AlertSettings = AlertSettings()
    stats: StatsSettings = StatsSettings()

    @model_validator(mode="after")
    def _refuse_the_bench_echo_in_production(self) -> Settings:
        if self.env == "production" and self.api.bench_echo:
            raise ValueError("API__BENCH_ECHO is a benchmark aid and is refused in production")
        return self

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
