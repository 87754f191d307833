"""The SQLModel tables. ("Model" means an ML model in this project; tables live here.)

All of them in one module, past 300 lines: the schema reads as one page, and Alembic compares
it with the migrations as one.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, String, Text, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored time as an aware UTC time (SQLite gives them back without a zone)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _timestamp(**kwargs: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), **kwargs)


class _HasId(Protocol):
    id: int | None


def saved_id(row: _HasId) -> int:
    """The primary key of a row that has been flushed."""
    if row.id is None:
        raise RuntimeError(f"{type(row).__name__} has no id until it is flushed")
    return row.id


class Source(StrEnum):
    DATASET = "dataset"
    API = "api"
    WEBHOOK = "webhook"
    TELEGRAM = "telegram"
    CLI = "cli"


class LabelKind(StrEnum):
    IMPORT = "import"
    CORRECTION = "correction"
    CONFIRMATION = "confirmation"


class Split(StrEnum):
    TRAIN = "train"
    TEST = "test"


class ModelStatus(StrEnum):
    CANDIDATE = "candidate"
    ACTIVE = "active"
    REJECTED = "rejected"
    RETIRED = "retired"


class Review(SQLModel, table=True):
    __tablename__ = "review"
    __table_args__ = (
        Index(
            "uq_review_external",
            "source",
            "tenant",
            "external_id",
            unique=True,
            sqlite_where=text("external_id IS NOT NULL"),
            postgresql_where=text("external_id IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    text: str = Field(sa_type=Text)
    text_hash: str = Field(max_length=64)
    source: Source = Field(sa_type=String(16))
    tenant: str = Field(default="", max_length=128, index=True)
    """Who owns the review: an API client's name, a Telegram user id, or empty for the dataset."""
    merchant_id: str | None = Field(default=None, max_length=128, index=True)
    external_id: str | None = Field(default=None, max_length=256)
    created_at: datetime = _timestamp(index=True)


class Prediction(SQLModel, table=True):
    __tablename__ = "prediction"
    id: int | None = Field(default=None, primary_key=True)
    review_id: int = Field(foreign_key="review.id", index=True)
    model_version_id: int | None = Field(default=None, foreign_key="model_version.id", index=True)
    backend: str = Field(max_length=32)
    model_id: str = Field(max_length=256)
    label: int
    confidence: float | None = None
    latency_ms: float
    fallback: bool = False
    tenant_view_id: int | None = Field(default=None, foreign_key="tenant_view.id")
    """The tenant's own view that answered, when one did (see TenantView)."""
    created_at: datetime = _timestamp(index=True)


class LabelEvent(SQLModel, table=True):
    """One human or dataset label. Append-only: revoking sets ``revoked_at`` and nothing else."""

    __tablename__ = "label_event"

    id: int | None = Field(default=None, primary_key=True)
    review_id: int = Field(foreign_key="review.id", index=True)
    text_hash: str = Field(default="", max_length=64, index=True)
    """The review's normalized-text hash: finds every label of the same text."""
    label: int
    actor: str = Field(max_length=128, index=True)
    channel: Source = Field(sa_type=String(16))
    kind: LabelKind = Field(sa_type=String(16), index=True)
    prediction_id: int | None = Field(default=None, foreign_key="prediction.id")
    split: Split | None = Field(default=None, sa_type=String(8), index=True)
    """For dataset imports: the canonical split the row belongs to."""
    created_at: datetime = _timestamp(index=True)
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_version"
    id: int | None = Field(default=None, primary_key=True)
    backend: str = Field(max_length=32)
    model_ref: str = Field(max_length=512)
    """What the backend loads: an artifact directory, a Zhipu model name, an adapter name."""
    snapshot: str | None = Field(default=None, max_length=64)
    """Content hash of the training data the version was trained on."""
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: ModelStatus = Field(default=ModelStatus.CANDIDATE, sa_type=String(16), index=True)
    note: str = Field(default="", sa_type=Text)
    created_at: datetime = _timestamp()
    promoted_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Snapshot(SQLModel, table=True):
    """A frozen training set: what a model version was trained on, written as chat JSONL."""

    __tablename__ = "snapshot"

    id: int | None = Field(default=None, primary_key=True)
    content_hash: str = Field(max_length=64, unique=True)
    directory: str = Field(max_length=512)
    train_sha256: str = Field(max_length=64)
    validation_sha256: str = Field(max_length=64)
    manifest: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _timestamp()


class ActorRole(StrEnum):
    ADMIN = "admin"
    MERCHANT = "merchant"


class Actor(SQLModel, table=True):
    """Someone who labels reviews, with the role they label with (an admin's labels join the
    shared model). What their labels are worth is measured per tenant: see Labeller."""

    __tablename__ = "actor"

    name: str = Field(primary_key=True, max_length=128)
    role: ActorRole = Field(default=ActorRole.MERCHANT, sa_type=String(16))
    updated_at: datetime = _timestamp()


class Labeller(SQLModel, table=True):
    """A tenant that labels reviews, as the last label resolution measured it.

    Trust is the share of its labels that agree with evidence independent of it and of the
    model: dataset labels, admins, other tenants. A flagged labeller's labels teach its own view
    only and corroborate nobody else's.
    """

    __tablename__ = "labeller"

    tenant: str = Field(primary_key=True, max_length=128)
    labels: int = 0
    """Live labels (each text counted once: the latest)."""
    accepted: int = 0
    pending: int = 0
    held_back: int = 0
    checked: int = 0
    """Labels on texts with independent evidence."""
    agreed: int = 0
    trust: float = 0.5
    flagged: bool = False
    updated_at: datetime = _timestamp()


class LabelConflict(SQLModel, table=True):
    """A text that unflagged tenants label differently, as the last label resolution found it
    (each resolution replaces them all): the shared model leaves it out, and each of those
    tenants' labels teaches its own view only."""

    __tablename__ = "label_conflict"

    text_hash: str = Field(primary_key=True, max_length=64)
    text: str = Field(sa_type=Text)
    votes: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """Each tenant's label, ``positive`` or ``negative``."""
    voices: int = 0
    """How many tenants labelled the text."""
    found_at: datetime = _timestamp()


class TenantView(SQLModel, table=True):
    """A tenant's own CPU model: the shared training set with the tenant's labels on top.

    It answers that tenant's reviews only, so labels nobody else has corroborated teach the
    tenant who gave them without reaching anyone else.
    """

    __tablename__ = "tenant_view"

    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(max_length=128, index=True)
    model_ref: str = Field(max_length=512)
    """The artifact folder under LOCAL__DIR."""
    snapshot: str = Field(max_length=64)
    """Content hash of the shared snapshot and the tenant's examples together."""
    base_version_id: int | None = Field(default=None, foreign_key="model_version.id")
    """The shared version active when the view was judged."""
    examples: int = 0
    own_examples: int = 0
    last_label_event_id: int = 0
    """The newest label event the view was trained with."""
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: ModelStatus = Field(default=ModelStatus.CANDIDATE, sa_type=String(16), index=True)
    note: str = Field(default="", sa_type=Text)
    created_at: datetime = _timestamp()


class FineTuneStatus(StrEnum):
    """Zhipu's job statuses, and ``uploading`` for a job whose files are not all sent yet."""

    UPLOADING = "uploading"
    CREATED = "created"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class FineTuneJob(SQLModel, table=True):
    """A cloud fine-tune of one snapshot: recorded before launch, polled until it has ended.

    One job per (backend, snapshot, attempt): a restarted process resumes it instead of launching
    another, and a snapshot is tried again (the next attempt) only when asked to after a failed
    or cancelled one. ``finished_at`` is set once the outcome is recorded (and, on success, the
    model version registered and evaluated).
    """

    __tablename__ = "finetune_job"
    __table_args__ = (
        Index("uq_finetune_job_attempt", "backend", "snapshot", "attempt", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    backend: str = Field(max_length=32)
    snapshot: str = Field(max_length=64)
    """Content hash of the snapshot trained on; with the attempt, the job's request id."""
    attempt: int = Field(default=1, sa_column_kwargs={"server_default": text("1")})
    """1, and one more for each launch of the same snapshot after a failed or cancelled one."""
    base_model: str = Field(max_length=128)
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    estimated_cost: float | None = None
    training_file_id: str | None = Field(default=None, max_length=128)
    validation_file_id: str | None = Field(default=None, max_length=128)
    external_id: str | None = Field(default=None, max_length=128, index=True)
    status: FineTuneStatus = Field(default=FineTuneStatus.UPLOADING, sa_type=String(16))
    remote_status: str = Field(default="", max_length=64)
    """The status as the provider last reported it, word for word (``pending``, ``queued``,
    ``validating_files``, ...): any that is not terminal is ``running`` here."""
    fine_tuned_model: str | None = Field(default=None, max_length=256)
    trained_tokens: int | None = None
    last_event: str = Field(default="", sa_type=Text)
    error: str | None = Field(default=None, sa_type=Text)
    paused_until: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    """The provider refuses calls until then (a used-up quota, a locked account): none is made."""
    curves: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """Loss as the provider reported it while training: ``{"train": [{"step", "epoch", "loss"},
    ...], "validation": [...]}``; saved with the model version the job produces."""
    newest_event_id: str | None = Field(default=None, max_length=128)
    """The newest provider event already read into ``curves``."""
    model_version_id: int | None = Field(default=None, foreign_key="model_version.id")
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), index=True)


class ClientRole(StrEnum):
    CLIENT = "client"
    ADMIN = "admin"


class ApiClient(SQLModel, table=True):
    """A platform that calls the HTTP API. The key itself is never stored, only its sha256."""

    __tablename__ = "api_client"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    role: ClientRole = Field(default=ClientRole.CLIENT, sa_type=String(16))
    key_sha256: str = Field(max_length=64, unique=True)
    previous_key_sha256: str | None = Field(default=None, max_length=64, unique=True)
    """The key replaced by the last rotation, still accepted until ``previous_key_expires_at``."""
    previous_key_expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    webhook_secrets: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """Newest first; the older one stays valid until the next rotation, so senders can switch."""
    created_at: datetime = _timestamp()
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class WebhookDelivery(SQLModel, table=True):
    """A webhook delivery already processed, and the response given to it (for retries)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("uq_webhook_delivery", "client_id", "webhook_id", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="api_client.id")
    webhook_id: str = Field(max_length=256)
    body_sha256: str | None = Field(default=None, max_length=64)
    """The hex sha256 of the signed body bytes: the same id with another body is a conflict.
    None for deliveries stored before it was kept (any body is replayed for those)."""
    response: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = _timestamp()


class TelegramUser(SQLModel, table=True):
    """A merchant or admin admitted to the Telegram bot."""

    __tablename__ = "telegram_user"

    telegram_id: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    role: ActorRole = Field(default=ActorRole.MERCHANT, sa_type=String(16))
    invite_code: str | None = Field(default=None, max_length=64)
    """The invite the user joined with (None when admitted by the open mode or the allowlist)."""
    language: str = Field(default="", max_length=16)
    created_at: datetime = _timestamp()


class Invite(SQLModel, table=True):
    """A one-use code for the bot's invite mode: a deep link t.me/<bot>?start=<code>."""

    __tablename__ = "invite"

    code: str = Field(primary_key=True, max_length=64)
    created_by: str = Field(max_length=128)
    used_by: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime = _timestamp()
    used_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class RetrainRequest(SQLModel, table=True):
    """Someone asked for a retrain; the learning loop's scheduler consumes pending requests."""

    __tablename__ = "retrain_request"

    id: int | None = Field(default=None, primary_key=True)
    requested_by: str = Field(max_length=128)
    reason: str = Field(default="", sa_type=Text)
    backend: str | None = Field(default=None, max_length=16)
    """The trainer asked for; None: the RETRAIN__BACKEND setting."""
    created_at: datetime = _timestamp(index=True)
    handled_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), index=True)
    outcome: str = Field(default="", sa_type=Text)


class TelegramUpdate(SQLModel, table=True):
    """A Telegram update taken for processing in webhook mode: of several API replicas that each
    receive a retried delivery, the one whose insert wins processes it. One not handled in time
    (its replica died) is taken again by a sweep (core/delivery/telegram_updates.py). Pruned
    after a week."""

    __tablename__ = "telegram_update"

    update_id: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    received_at: datetime = _timestamp(index=True)
    """When the update was taken (again), or last kept alive by the replica handling it."""
    payload: str | None = Field(default=None, sa_type=Text)
    """The update as Telegram posted it (JSON); None for updates taken before migration 0010."""
    attempts: int = Field(default=1, sa_column_kwargs={"server_default": text("1")})
    """1, and one more each time a sweep took the update again."""
    handled_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), index=True)


class Notification(SQLModel, table=True):
    """An event published for whoever listens (core/store/outbox.py): claimed by one listening
    process, marked delivered once its subscribers have it."""

    __tablename__ = "notification"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _timestamp(index=True)
    claimed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    delivered_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), index=True)


class DriftAlert(SQLModel, table=True):
    """A rate above its alert threshold (a merchant's corrections, the fallbacks' share): raised
    once, and deleted when the rate is back under it, so the next rise is told again."""

    __tablename__ = "drift_alert"

    key: str = Field(primary_key=True, max_length=160)
    """``correction_rate:<tenant>`` or ``fallback_rate``."""
    figures: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    raised_at: datetime = _timestamp()


class ReviewDay(SQLModel, table=True):
    """The review counts of one day (UTC, by the review's creation) of one tenant and merchant,
    as the last stats rollup found them (``core.classify.stats``)."""

    __tablename__ = "stats_review_day"

    day: date = Field(primary_key=True)
    tenant: str = Field(primary_key=True, max_length=128)
    merchant_id: str = Field(primary_key=True, max_length=128)
    """Empty for reviews without one."""
    reviews: int
    positive: int
    labelled: int
    corrections: int


class PredictionDay(SQLModel, table=True):
    """The prediction counts of one day (by the prediction's creation), tenant, merchant and
    model version, as the last stats rollup found them."""

    __tablename__ = "stats_prediction_day"

    day: date = Field(primary_key=True)
    tenant: str = Field(primary_key=True, max_length=128)
    merchant_id: str = Field(primary_key=True, max_length=128)
    model_version_id: int = Field(primary_key=True)
    """0 for predictions of no registered version."""
    backend: str = Field(primary_key=True, max_length=32)
    predictions: int
    positive: int
    corrections: int
    fallbacks: int


class StatsRollup(SQLModel, table=True):
    """Up to when the day tables hold the counts (the start of the day the rollup ran)."""

    __tablename__ = "stats_rollup"

    id: int = Field(default=1, primary_key=True)
    through: datetime = Field(sa_type=DateTime(timezone=True))
    refreshed_at: datetime = _timestamp()
