"""What the API reads and writes about classifying: requests, verdicts, labels and errors.
Pydantic models that are also its OpenAPI schema (the stored things it shows: api/resources.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.access.principal import Principal
from core.classify.service import Classified, ReviewInput
from core.config import TrainerName
from core.errors import InvalidInput
from core.labels.feedback import LabelInput
from core.labels.vocabulary import parse_label
from core.store.tables import as_utc
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
    text: Text = Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        description="The review as the customer wrote it, up to 2,000 characters. It must be "
        "text with readable characters: one that is empty once stripped, looks like binary "
        "data (holds NUL or U+FFFD) or has only control, format or space characters is "
        "refused with a 422 naming it (`reviews[0].text looks like binary data, not a "
        "review`).",
        examples=["送餐太慢了，菜都凉了"],
    )
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


def verdicts(results: list[Classified], reviews: list[ReviewIn]) -> list[dict[str, Any]]:
    """The fields of each result's ReviewVerdict, for the response model to validate all at once
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


MAX_LABELS = 1000


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
        description="Who at your end gave the label (one of your merchants or reviewers); "
        "recorded as '<client>/<actor>'. All of a client's actors are one labeller: they share "
        "the client's trust, and each one's label counts as the client's.",
    )
    prediction_id: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="The prediction answered (default: the review's latest).",
    )

    def to_core(self, by: Principal, review_id: int) -> LabelInput:
        """The label as the core takes it, given by ``by`` for ``actor``."""
        return LabelInput(
            review_id, parse_label(self.label), by.actor_for(self.actor), self.prediction_id
        )


class LabelIn(FeedbackRequest):
    """One label of a batch: the review it labels and what `POST /v1/reviews/{id}/feedback`
    takes."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"review_id": 12001, "label": "positive", "actor": "shop-17"}]
        }
    )

    review_id: int = Field(ge=1, le=MAX_ID, description="A review of yours (any, for admins).")


class LabelsRequest(_Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "labels": [
                        {"review_id": 12001, "label": "positive", "actor": "shop-17"},
                        {"review_id": 12002, "label": "negative", "prediction_id": 311},
                    ]
                }
            ]
        }
    )

    labels: list[LabelIn] = Field(min_length=1, max_length=MAX_LABELS)

    def to_core(self, by: Principal) -> list[LabelInput]:
        return [item.to_core(by, item.review_id) for item in self.labels]


class LabelsWebhookEvent(LabelsRequest):
    """The body of a signed delivery of labels."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "labels.created",
                    "labels": [{"review_id": 12001, "label": "positive", "actor": "shop-17"}],
                }
            ]
        }
    )

    type: Literal["labels.created"] = "labels.created"


class RetrainIn(_Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reason": "500 new corrections", "backend": "local"}]}
    )

    reason: str = Field(default="", max_length=500, pattern=r"^[^\x00]*$")
    backend: TrainerName | None = Field(
        default=None, description="The trainer (default: RETRAIN__BACKEND)."
    )


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_input"])
    message: str = Field(examples=["reviews[0].text: String should have at least 1 character"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


def label_name(label: Label) -> LabelName:
    return cast(LabelName, label.api_name)


def label_zh(label: Label) -> LabelZh:
    return cast(LabelZh, label.zh)


def since_utc(moment: datetime | None) -> datetime | None:
    """A ``since`` filter in UTC; a time given without a zone is taken as UTC."""
    if moment is None:
        return None
    try:
        return as_utc(moment)
    except OverflowError:
        raise InvalidInput("since: the time is out of range") from None
