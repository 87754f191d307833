"""What the API answers to classifying, to webhooks, about model versions and its health, and
its errors: pydantic models that are also its OpenAPI schema (the names end in ``Out``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from api.inputs import LabelName, LabelZh, ReviewIn
from core.classify.service import Classified
from core.models.retrain_requests import RetrainTicket
from core.store.tables import (
    ModelStatus,
    ModelVersion,
    as_utc,
    saved_id,
)
from serving.base import Label


class ModelRefOut(BaseModel):
    version_id: int | None = Field(description="The model version that answered.")
    backend: str = Field(examples=["local"])


class VerdictOut(BaseModel):
    review_id: int
    prediction_id: int
    external_id: str | None
    label: LabelName
    label_zh: LabelZh
    confidence: float | None = Field(
        ge=0, le=1, description="The probability of the label, or null when the model has none."
    )
    model: ModelRefOut
    fallback: bool = Field(description="True when a fallback model answered.")


class ClassifyOut(BaseModel):
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

    results: list[VerdictOut]


class ReviewsWebhookOut(ClassifyOut):
    webhook_id: str


def verdicts(results: list[Classified], reviews: list[ReviewIn]) -> list[dict[str, Any]]:
    """The fields of each result's VerdictOut, for the response model to validate all at once
    (one call into pydantic's core rather than two models built per review)."""
    return [
        {
            "review_id": result.review_id,
            "prediction_id": result.prediction_id,
            "external_id": review.external_id,
            "label": label_name(result.verdict.label),
            "label_zh": label_zh(result.verdict.label),
            "confidence": result.verdict.confidence,
            "model": {"version_id": result.model_version_id, "backend": result.backend},
            "fallback": result.fallback,
        }
        for result, review in zip(results, reviews, strict=True)
    ]


class ErrorDetailOut(BaseModel):
    code: str = Field(examples=["invalid_input"])
    message: str = Field(examples=["reviews[0].text: String should have at least 1 character"])


class ErrorOut(BaseModel):
    error: ErrorDetailOut


def label_name(label: Label) -> LabelName:
    return cast(LabelName, label.api_name)


def label_zh(label: Label) -> LabelZh:
    return cast(LabelZh, label.zh)


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
            id=saved_id(version),
            backend=version.backend,
            model_ref=version.model_ref,
            status=ModelStatus(version.status),
            metrics=version.metrics,
            note=version.note,
            created_at=as_utc(version.created_at),
            promoted_at=as_utc(version.promoted_at) if version.promoted_at else None,
        )


class ModelListOut(BaseModel):
    models: list[ModelVersionOut] = Field(description="Newest first.")


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
            id=saved_id(request),
            new=ticket.new,
            requested_by=request.requested_by,
            reason=request.reason,
            backend=request.backend,
            created_at=as_utc(request.created_at),
        )


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessOut(BaseModel):
    status: Literal["ready"] = "ready"
    model: ModelRefOut
    fallback: bool = Field(
        description="True when the active version cannot load and a fallback would answer."
    )
