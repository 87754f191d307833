"""What the API reads and writes: pydantic models that are also its OpenAPI schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.classification import Classified, ReviewInput
from core.errors import InvalidInput
from core.retrain_requests import RetrainTicket
from core.reviews import ReviewRecord, Stats
from core.tables import LabelEvent, LabelKind, ModelStatus, ModelVersion, Prediction
from serving.base import Label

MAX_BATCH = 256
MAX_TEXT_CHARS = 2000

LabelName = Literal["positive", "negative"]
LabelZh = Literal["好评", "差评"]
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
"""Ids and names: any characters but control characters."""
MAX_ID = 2**31 - 1
"""Ids are 32-bit integers in the store."""


def _encodable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode text (it holds a lone surrogate)") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReviewIn(_Strict):
    text: Text = Field(min_length=1, max_length=MAX_TEXT_CHARS, examples=["送餐太慢了，菜都凉了"])
    external_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        pattern=ID_PATTERN,
        description="Your id for the review; sending it again reuses the stored review.",
        examples=["order-20261128-0042"],
    )
    merchant_id: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=ID_PATTERN, examples=["shop-17"]
    )

    def to_core(self) -> ReviewInput:
        return ReviewInput(self.text, self.external_id, self.merchant_id)


class ClassifyRequest(_Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "reviews": [
                        {"text": "送餐太慢了，菜都凉了", "external_id": "order-1"},
                        {"text": "味道不错，分量足，还会再点", "merchant_id": "shop-17"},
                    ]
                }
            ]
        }
    )

    reviews: list[ReviewIn] = Field(min_length=1, max_length=MAX_BATCH)


class WebhookEvent(ClassifyRequest):
    """The body of a signed webhook delivery."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "reviews.created", "reviews": [{"text": "很快，好吃，味道足，量大"}]}
            ]
        }
    )

    type: Literal["reviews.created"] = "reviews.created"


class ModelRef(BaseModel):
    version_id: int | None = Field(description="The model version that answered.")
    backend: str = Field(examples=["local"])


class ReviewVerdict(BaseModel):
    review_id: int
    prediction_id: int
    external_id: str | None
    label: LabelName
    label_zh: LabelZh
    confidence: float | None = Field(
        ge=0, le=1, description="The probability of the label, or null when the model has none."
    )
    model: ModelRef
    fallback: bool = Field(description="True when a fallback model answered.")

    @classmethod
    def of(cls, result: Classified, external_id: str | None) -> ReviewVerdict:
        label = result.verdict.label
        return cls(
            review_id=result.review_id,
            prediction_id=result.prediction_id,
            external_id=external_id,
            label=_name(label),
            label_zh=_zh(label),
            confidence=result.verdict.confidence,
            model=ModelRef(version_id=result.model_version_id, backend=result.backend),
            fallback=result.fallback,
        )


class ClassifyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        {
                            "review_id": 12001,
                            "prediction_id": 310,
                            "external_id": "order-1",
                            "label": "negative",
                            "label_zh": "差评",
                            "confidence": 0.97,
                            "model": {"version_id": 3, "backend": "local"},
                            "fallback": False,
                        }
                    ]
                }
            ]
        }
    )

    results: list[ReviewVerdict]


class WebhookResponse(ClassifyResponse):
    webhook_id: str


def verdicts(results: list[Classified], reviews: list[ReviewIn]) -> list[ReviewVerdict]:
    return [
        ReviewVerdict.of(result, review.external_id)
        for result, review in zip(results, reviews, strict=True)
    ]


class FeedbackRequest(_Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"label": "negative", "actor": "reviewer-7"}]}
    )

    label: LabelName
    actor: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=ID_PATTERN,
        description="Who at your end gave the label; recorded as '<client>/<actor>'.",
    )
    prediction_id: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="The prediction answered (default: the review's latest).",
    )


class LabelEventOut(BaseModel):
    id: int
    review_id: int
    label: LabelName
    label_zh: LabelZh
    kind: LabelKind
    actor: str
    prediction_id: int | None
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, event: LabelEvent) -> LabelEventOut:
        label = Label(event.label)
        return cls(
            id=event.id or 0,
            review_id=event.review_id,
            label=_name(label),
            label_zh=_zh(label),
            kind=LabelKind(event.kind),
            actor=event.actor,
            prediction_id=event.prediction_id,
            created_at=utc(event.created_at),
            revoked_at=utc(event.revoked_at) if event.revoked_at else None,
        )


class PredictionOut(BaseModel):
    id: int
    label: LabelName
    label_zh: LabelZh
    confidence: float | None = Field(ge=0, le=1)
    model: ModelRef
    fallback: bool
    created_at: datetime

    @classmethod
    def of(cls, prediction: Prediction) -> PredictionOut:
        label = Label(prediction.label)
        return cls(
            id=prediction.id or 0,
            label=_name(label),
            label_zh=_zh(label),
            confidence=prediction.confidence,
            model=ModelRef(version_id=prediction.model_version_id, backend=prediction.backend),
            fallback=prediction.fallback,
            created_at=utc(prediction.created_at),
        )


class ReviewOut(BaseModel):
    id: int
    text: str
    source: str
    merchant_id: str | None
    external_id: str | None
    created_at: datetime
    label: LabelName | None = Field(description="A person's latest label if any, else the model's.")
    label_zh: LabelZh | None
    corrected: bool = Field(description="Whether a person's latest label corrects the model.")
    prediction: PredictionOut | None

    @classmethod
    def fields_of(cls, record: ReviewRecord) -> dict[str, Any]:
        review, label = record.review, record.label
        return {
            "id": review.id or 0,
            "text": review.text,
            "source": review.source,
            "merchant_id": review.merchant_id,
            "external_id": review.external_id,
            "created_at": utc(review.created_at),
            "label": _name(label) if label is not None else None,
            "label_zh": _zh(label) if label is not None else None,
            "corrected": record.corrected,
            "prediction": PredictionOut.of(record.prediction) if record.prediction else None,
        }

    @classmethod
    def of(cls, record: ReviewRecord) -> ReviewOut:
        return cls(**cls.fields_of(record))


class ReviewDetail(ReviewOut):
    labels: list[LabelEventOut] = Field(description="Every human label, revoked ones included.")

    @classmethod
    def of_history(cls, record: ReviewRecord, history: list[LabelEvent]) -> ReviewDetail:
        return cls(**cls.fields_of(record), labels=[LabelEventOut.of(e) for e in history])


class ReviewPage(BaseModel):
    items: list[ReviewOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: end.")


class VersionStatsOut(BaseModel):
    model_version_id: int | None
    backend: str
    predictions: int
    positive: int
    positive_rate: float | None
    corrections: int
    correction_rate: float | None
    fallbacks: int


class StatsOut(BaseModel):
    reviews: int
    positive: int
    positive_rate: float | None
    labelled: int
    corrections: int
    correction_rate: float | None
    by_model_version: list[VersionStatsOut]

    @classmethod
    def of(cls, stats: Stats) -> StatsOut:
        return cls(
            reviews=stats.reviews,
            positive=stats.positive,
            positive_rate=stats.positive_rate,
            labelled=stats.labelled,
            corrections=stats.corrections,
            correction_rate=stats.correction_rate,
            by_model_version=[
                VersionStatsOut.model_validate(version, from_attributes=True)
                for version in stats.by_version
            ],
        )


class ModelVersionOut(BaseModel):
    id: int
    backend: str
    model_ref: str
    status: ModelStatus
    metrics: dict[str, Any] = Field(description="Holdout figures: accuracy, macro_f1, ece, ...")
    note: str
    created_at: datetime
    promoted_at: datetime | None

    @classmethod
    def of(cls, version: ModelVersion) -> ModelVersionOut:
        return cls(
            id=version.id or 0,
            backend=version.backend,
            model_ref=version.model_ref,
            status=ModelStatus(version.status),
            metrics=version.metrics,
            note=version.note,
            created_at=utc(version.created_at),
            promoted_at=utc(version.promoted_at) if version.promoted_at else None,
        )


class ModelList(BaseModel):
    models: list[ModelVersionOut] = Field(description="Newest first.")


class RetrainIn(_Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reason": "500 new corrections", "backend": "local"}]}
    )

    reason: str = Field(default="", max_length=500, pattern=r"^[^\x00]*$")
    backend: Literal["local", "zhipu", "lora"] | None = Field(
        default=None, description="The trainer (default: RETRAIN__BACKEND)."
    )


class RetrainTicketOut(BaseModel):
    id: int
    new: bool = Field(description="False when a pending request absorbed this one.")
    requested_by: str
    reason: str
    backend: str | None
    created_at: datetime

    @classmethod
    def of(cls, ticket: RetrainTicket) -> RetrainTicketOut:
        request = ticket.request
        return cls(
            id=request.id or 0,
            new=ticket.new,
            requested_by=request.requested_by,
            reason=request.reason,
            backend=request.backend,
            created_at=utc(request.created_at),
        )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    model: ModelRef
    fallback: bool = Field(
        description="True when the active version cannot load and a fallback would answer."
    )


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_input"])
    message: str = Field(examples=["reviews[0].text: String should have at least 1 character"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


def utc(moment: datetime) -> datetime:
    """SQLite gives back naive UTC datetimes; the API always answers with a zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _name(label: Label) -> LabelName:
    return "positive" if label is Label.POSITIVE else "negative"


def _zh(label: Label) -> LabelZh:
    return "好评" if label is Label.POSITIVE else "差评"


def since_utc(moment: datetime | None) -> datetime | None:
    """A ``since`` filter in UTC; a time given without a zone is taken as UTC."""
    if moment is None:
        return None
    try:
        return utc(moment)
    except OverflowError:
        raise InvalidInput("since: the time is out of range") from None
