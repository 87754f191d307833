"""``POST /v1/webhooks/reviews`` and ``POST /v1/webhooks/labels``: signed deliveries from
platforms, processed exactly once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response

from api.answers import ReviewsWebhookOut, verdicts
from api.auth import CallerDep
from api.deps import CoreDep
from api.errors import ERROR_RESPONSES, INVALID_REVIEWS, refusals, responses
from api.inputs import ID_PATTERN, LabelsWebhookIn, ReviewIn, ReviewsWebhookIn
from api.records import LabelsOut, LabelsWebhookOut
from api.routes.feedback import FATES
from core.access.clients import Caller
from core.classify.service import Classified
from core.labels.feedback import Labelled

router = APIRouter(prefix="/v1", tags=["webhooks"], responses=ERROR_RESPONSES)


@dataclass(frozen=True)
class SignedDelivery:
    caller: Caller
    webhook_id: str
    body: bytes
    """The signed body bytes (a retry must send the same, see ``core.webhooks``)."""


async def signed_by(
    request: Request,
    caller: CallerDep,
    core: CoreDep,
    webhook_id: Annotated[
        str,
        Header(
            min_length=1,
            max_length=256,
            pattern=ID_PATTERN,
            description="The delivery's id: a retry with the same id and the same body gets "
            "the first response; the same id with another body is a 409.",
        ),
    ],
    webhook_timestamp: Annotated[
        str, Header(max_length=20, description="Unix seconds; at most 300 s from now.")
    ],
    webhook_signature: Annotated[
        str,
        Header(
            max_length=2048,
            description="`v1,<base64 HMAC-SHA256 of 'id.timestamp.body'>`, space-separated.",
        ),
    ],
) -> SignedDelivery:
    """The caller and the delivery's id, once the Standard Webhooks signature over the raw body
    checks out."""
    body = await request.body()
    core.clients.verify_webhook(caller, body, request.headers)
    return SignedDelivery(caller, webhook_id, body)


REPLAYED: dict[str, Any] = {
    "description": "`true` when this is the first response again, for a retried delivery.",
    "schema": {"type": "string", "enum": ["true"]},
}
ONCE = """A delivery sent again with the same `webhook-id` and the same body stores nothing and gets
the first response back, with the header `Idempotent-Replayed: true`. The same `webhook-id`
with another body is a 409 `idempotency_conflict`, and stores nothing: a new delivery needs a
new id.
"""
REUSED_ID = refusals(
    409,
    "The `webhook-id` was already used for a delivery with another body "
    "(`idempotency_conflict`): a retry must send the same bytes, a new delivery needs a new id. "
    "Or the delivery contradicts the current state (`conflict`).",
    {
        "idempotency_conflict": (
            "idempotency_conflict",
            "webhook-id 'msg_2Kx7' was already used for a delivery with another body; a retry "
            "must send the same bytes, a new delivery needs a new id",
        )
    },
)
REPLAYS: dict[int | str, dict[str, Any]] = {200: {"headers": {"Idempotent-Replayed": REPLAYED}}}


@router.post(
    "/webhooks/reviews",
    responses={**responses(503), **REUSED_ID, **INVALID_REVIEWS, **REPLAYS},
    description="""Classify and store the reviews of a signed delivery (Standard Webhooks).

Sign `"{webhook-id}.{webhook-timestamp}.{body}"` with HMAC-SHA256 and your webhook secret
(the base64 after `whsec_`).
"""
    + ONCE,
)
async def receive_reviews(
    event: ReviewsWebhookIn,
    signed: Annotated[SignedDelivery, Depends(signed_by)],
    core: CoreDep,
    response: Response,
) -> ReviewsWebhookOut:
    delivery = await core.webhooks.deliver(
        signed.caller,
        signed.webhook_id,
        [review.to_core() for review in event.reviews],
        partial(_reviews_answer, signed.webhook_id, event.reviews),
        body=signed.body,
    )
    if delivery.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return ReviewsWebhookOut.model_validate(delivery.response)


def _reviews_answer(
    webhook_id: str, reviews: list[ReviewIn], results: list[Classified]
) -> dict[str, Any]:
    answer = {"webhook_id": webhook_id, "results": verdicts(results, reviews)}
    return ReviewsWebhookOut.model_validate(answer).model_dump(mode="json")


@router.post(
    "/webhooks/labels",
    responses={**responses(404), **REUSED_ID, **REPLAYS},
    description="""Store the labels of a signed delivery (Standard Webhooks), each as
`POST /v1/reviews/{id}/feedback` would: all are stored, or none (a review that is not yours is
a 404 naming its index).

Signed like `POST /v1/webhooks/reviews`.
"""
    + ONCE
    + FATES,
)
async def receive_labels(
    event: LabelsWebhookIn,
    signed: Annotated[SignedDelivery, Depends(signed_by)],
    core: CoreDep,
    response: Response,
) -> LabelsWebhookOut:
    delivery = await core.webhooks.deliver_labels(
        signed.caller,
        signed.webhook_id,
        event.to_core(signed.caller.principal),
        partial(_labels_answer, signed.webhook_id),
        body=signed.body,
    )
    if delivery.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return LabelsWebhookOut.model_validate(delivery.response)


def _labels_answer(webhook_id: str, stored: list[Labelled]) -> dict[str, Any]:
    return {"webhook_id": webhook_id, **LabelsOut.of(stored).model_dump(mode="json")}
