"""The SQLModel tables. ("Model" means an ML model in this project; tables live here.)"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import JSON, Column, DateTime, Index, String, Text, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


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
    text_hash: str = Field(index=True, max_length=64)
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
    created_at: datetime = _timestamp(index=True)


class LabelEvent(SQLModel, table=True):
    """One human or dataset label. Append-only: revoking sets ``revoked_at`` and nothing else."""

    __tablename__ = "label_event"

    id: int | None = Field(default=None, primary_key=True)
    review_id: int = Field(foreign_key="review.id", index=True)
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
    """Someone who labels reviews. Trust is recomputed from their labels at each resolution."""

    __tablename__ = "actor"

    name: str = Field(primary_key=True, max_length=128)
    role: ActorRole = Field(default=ActorRole.MERCHANT, sa_type=String(16))
    trust: float = 0.5
    labels: int = 0
    agreements: int = 0
    updated_at: datetime = _timestamp()
