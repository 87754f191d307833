"""What the API shows of stored things: labels and their fates, predictions, reviews and stats,
as pydantic models that are also its OpenAPI schema (the names end in ``Out``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from api.answers import ModelRefOut, label_name, label_zh
from api.inputs import LabelName, LabelZh
from core.classify.reviews import ReviewRecord
from core.classify.stats import Stats
from core.labels.feedback import Labelled, LabelledReview
from core.labels.rules import FATE_CODES, FateStatus
from core.store.tables import (
    LabelEvent,
    LabelKind,
    Prediction,
    as_utc,
    saved_id,
)
from serving.base import Label

_FATE_EXAMPLE: dict[str, JsonValue] = {
    "status": "pending",
    "code": "awaiting_corroboration",
    "reason": "teaches your own model now; joins the shared model once another tenant or an "
    "admin gives the same label",
    "own_view": True,
    "trained": False,
}


class FateOut(BaseModel):
    """What became of a label. Your labels always teach your own model ("your own view") at
    the next retrain; they join the shared model, which serves everyone, only when an admin,
    the dataset or another client gives the same label."""

    model_config = ConfigDict(json_schema_extra={"examples": [_FATE_EXAMPLE]})

    status: FateStatus = Field(
        description="`accepted`: it joins the shared model. `pending`: it teaches your own "
        "model and waits for someone independent of you to agree. `held_back`: it does not "
        "join the shared model (`code` and `reason` say why; it may still teach your own)."
    )
    code: str = Field(
        description="Why, as one of a fixed set of codes: " + ", ".join(FATE_CODES) + ".",
        json_schema_extra={"enum": list(FATE_CODES)},
        examples=["awaiting_corroboration"],
    )
    reason: str = Field(
        description="The same in an English sentence.", examples=[_FATE_EXAMPLE["reason"]]
    )
    own_view: bool = Field(description="Whether it teaches your own model.")
    trained: bool = Field(
        description="Whether the model answering your reviews now was trained after this "
        "label (false until the next retrain)."
    )

    @classmethod
    def of(cls, labelled: Labelled) -> FateOut:
        fate = labelled.fate
        return cls(
            status=fate.status,
            code=fate.code,
            reason=fate.reason,
            own_view=fate.own_view,
            trained=labelled.trained,
        )


class LabelEventOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 42,
                    "review_id": 12001,
                    "label": "positive",
                    "label_zh": "好评",
                    "kind": "correction",
                    "actor": "acme/shop-17",
                    "prediction_id": 310,
                    "created_at": "2026-11-28T02:15:00Z",
                    "revoked_at": None,
                    "fate": _FATE_EXAMPLE,
                }
            ]
        }
    )

    id: int
    review_id: int
    label: LabelName
    label_zh: LabelZh
    kind: LabelKind
    actor: str
    prediction_id: int | None
    created_at: datetime
    revoked_at: datetime | None
    fate: FateOut | None = Field(
        description="What became of the label, by the rules the next retrain applies; null "
        "for a revoked label."
    )

    @classmethod
    def of(cls, event: LabelEvent, labelled: Labelled | None = None) -> LabelEventOut:
        label = Label(event.label)
        return cls(
            id=saved_id(event),
            review_id=event.review_id,
            label=label_name(label),
            label_zh=label_zh(label),
            kind=LabelKind(event.kind),
            actor=event.actor,
            prediction_id=event.prediction_id,
            created_at=as_utc(event.created_at),
            revoked_at=as_utc(event.revoked_at) if event.revoked_at else None,
            fate=FateOut.of(labelled) if labelled is not None and not event.revoked_at else None,
        )

    @classmethod
    def stored(cls, labelled: Labelled) -> LabelEventOut:
        return cls.of(labelled.event, labelled)


class LabelsOut(BaseModel):
    labels: list[LabelEventOut] = Field(description="The labels stored, in the order sent.")

    @classmethod
    def of(cls, stored: list[Labelled]) -> LabelsOut:
        return cls(labels=[LabelEventOut.stored(labelled) for labelled in stored])


class LabelsWebhookOut(LabelsOut):
    webhook_id: str


class PredictionOut(BaseModel):
    id: int
    label: LabelName
    label_zh: LabelZh
    confidence: float | None = Field(ge=0, le=1)
    model: ModelRefOut
    fallback: bool
    created_at: datetime

    @classmethod
    def of(cls, prediction: Prediction) -> PredictionOut:
        label = Label(prediction.label)
        return cls(
            id=saved_id(prediction),
            label=label_name(label),
            label_zh=label_zh(label),
            confidence=prediction.confidence,
            model=ModelRefOut(version_id=prediction.model_version_id, backend=prediction.backend),
            fallback=prediction.fallback,
            created_at=as_utc(prediction.created_at),
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
            "id": saved_id(review),
            "text": review.text,
            "source": review.source,
            "merchant_id": review.merchant_id,
            "external_id": review.external_id,
            "created_at": as_utc(review.created_at),
            "label": label_name(label) if label is not None else None,
            "label_zh": label_zh(label) if label is not None else None,
            "corrected": record.corrected,
            "prediction": PredictionOut.of(record.prediction) if record.prediction else None,
        }

    @classmethod
    def of(cls, record: ReviewRecord) -> ReviewOut:
        return cls(**cls.fields_of(record))


class ReviewDetailOut(ReviewOut):
    labels: list[LabelEventOut] = Field(
        description="Every human label, revoked ones included, oldest first, each with its fate."
    )

    @classmethod
    def of_labelled(cls, review: LabelledReview) -> ReviewDetailOut:
        return cls(
            **cls.fields_of(review.record),
            labels=[LabelEventOut.of(event, labelled) for event, labelled in review.labels],
        )


class ReviewPageOut(BaseModel):
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
