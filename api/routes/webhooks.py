"""``POST /v1/webhooks/reviews``: signed deliveries from platforms, processed exactly once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response

from api.auth import CallerDep
from api.deps import CoreDep, MetricsDep
from api.errors import ERROR_RESPONSES, responses
from api.schemas import ID_PATTERN, WebhookEvent, WebhookResponse, verdicts
from core.classification import Classified
from core.clients import Caller

router = APIRouter(prefix="/v1", tags=["webhooks"], responses=ERROR_RESPONSES)


@dataclass(frozen=True)
class SignedDelivery:
    caller: Caller
    webhook_id: str


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
            description="The delivery's id: a retry with the same id gets the first response.",
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
    core.clients.verify_webhook(caller, await request.body(), request.headers)
    return SignedDelivery(caller, webhook_id)


REPLAYED: dict[str, Any] = {
    "description": "`true` when this is the first response again, for a retried delivery.",
    "schema": {"type": "string", "enum": ["true"]},
}


@router.post(
    "/webhooks/reviews",
    responses={**responses(409, 503), 200: {"headers": {"Idempotent-Replayed": REPLAYED}}},
)
async def receive_reviews(
    event: WebhookEvent,
    signed: Annotated[SignedDelivery, Depends(signed_by)],
    core: CoreDep,
    metrics: MetricsDep,
    response: Response,
) -> WebhookResponse:
    """Classify and store the reviews of a signed delivery (Standard Webhooks).

    Sign `"{webhook-id}.{webhook-timestamp}.{body}"` with HMAC-SHA256 and your webhook secret
    (the base64 after `whsec_`). A delivery sent again with the same `webhook-id` stores nothing
    and gets the first response back, with the header `Idempotent-Replayed: true`.
    """
    classified: list[Classified] = []

    def respond(results: list[Classified]) -> dict[str, Any]:
        classified[:] = results
        answer = WebhookResponse.model_validate(
            {"webhook_id": signed.webhook_id, "results": verdicts(results, event.reviews)}
        )
        return answer.model_dump(mode="json")

    delivery = await core.webhooks.deliver(
        signed.caller, signed.webhook_id, [review.to_core() for review in event.reviews], respond
    )
    if delivery.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        metrics.classified(classified)
    return WebhookResponse.model_validate(delivery.response)
