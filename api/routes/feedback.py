"""Human labels: ``POST /v1/reviews/{id}/feedback`` appends one, ``DELETE /v1/feedback/{id}``
revokes one (undo)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.auth import CallerDep, scope
from api.deps import CoreDep, MetricsDep
from api.errors import ERROR_RESPONSES, responses
from api.resources import LabelEventOut
from api.schemas import MAX_ID, FeedbackRequest
from core.labels import parse_label
from core.tables import ActorRole, Source

router = APIRouter(prefix="/v1", tags=["feedback"], responses=ERROR_RESPONSES)

Id = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.post("/reviews/{review_id}/feedback", status_code=201, responses=responses(404))
def give_feedback(
    review_id: Id, body: FeedbackRequest, caller: CallerDep, core: CoreDep, metrics: MetricsDep
) -> LabelEventOut:
    """Say what a review really is. It confirms or corrects the prediction it answers.

    Labels are appended, never replaced: the same actor labelling again adds a label, and the
    latest one counts.
    """
    event = core.feedback.record(
        review_id,
        parse_label(body.label),
        actor=caller.name if body.actor is None else f"{caller.name}/{body.actor}",
        channel=Source.API,
        tenant=scope(caller),
        prediction_id=body.prediction_id,
        role=ActorRole.ADMIN if caller.is_admin else ActorRole.MERCHANT,
    )
    metrics.labelled(event)
    return LabelEventOut.of(event)


@router.delete("/feedback/{label_event_id}", responses=responses(404, 409))
def revoke_feedback(
    label_event_id: Id, caller: CallerDep, core: CoreDep, metrics: MetricsDep
) -> LabelEventOut:
    """Undo a label: it stays on record with `revoked_at` set and no longer counts."""
    event = core.feedback.revoke(label_event_id, tenant=scope(caller))
    metrics.labelled(event, revoked=True)
    return LabelEventOut.of(event)
