"""What the API reads: the JSON bodies of its requests, as pydantic models that are also its
OpenAPI schema (the names end in ``In``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.access.principal import Principal
from core.classify.service import ReviewInput
from core.config import TrainerName
from core.labels.feedback import LabelInput
from core.labels.vocabulary import parse_label

MAX_BATCH = 256

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
        description="The review as the customer wrote it, up to `maxLength` characters "
        "(`SERVING__MAX_TEXT_CHARS`, 2,000 unless the operator changed it). It must be "
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


class ClassifyIn(_Strict):
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


class ReviewsWebhookIn(ClassifyIn):
    """The body of a signed webhook delivery."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "reviews.created", "reviews": [{"text": "很快，好吃，味道足，量大"}]}
            ]
        }
    )

    type: Literal["reviews.created"] = "reviews.created"


MAX_LABELS = 1000


class FeedbackIn(_Strict):
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


class LabelIn(FeedbackIn):
    """One label of a batch: the review it labels and what `POST /v1/reviews/{id}/feedback`
    takes."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"review_id": 12001, "label": "positive", "actor": "shop-17"}]
        }
    )

    review_id: int = Field(ge=1, le=MAX_ID, description="A review of yours (any, for admins).")


class LabelsIn(_Strict):
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


class LabelsWebhookIn(LabelsIn):
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


class PromoteIn(_Strict):
    force: bool = Field(
        default=False,
        description="Promote even if the holdout gate would keep the version out; the version "
        "records who forced it (`metrics.forced`).",
    )
