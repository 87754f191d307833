"""Human labels: ``POST /v1/reviews/{id}/feedback`` appends one, ``POST /v1/feedback`` many at
once, ``DELETE /v1/feedback/{id}`` revokes one (undo)."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import CallerDep, scope
from api.deps import CoreDep
from api.errors import ERROR_RESPONSES, responses
from api.inputs import FeedbackIn, LabelsIn
from api.params import Id
from api.records import LabelEventOut, LabelsOut
from core.store.tables import Source

router = APIRouter(prefix="/v1", tags=["feedback"], responses=ERROR_RESPONSES)

FATES = """
The answer says what became of each label (`fate`): your labels always teach your own model
at the next retrain; they join the shared model only when an admin, the dataset or another
client gives the same label (`accepted`), else they wait for that (`pending`) or stay out of
it, with the reason (`held_back`).
"""


@router.post(
    "/reviews/{review_id}/feedback",
    status_code=201,
    responses=responses(404),
    description="""Say what a review really is. It confirms or corrects the prediction it answers.

Labels are appended, never replaced: the same actor labelling again adds a label, and the
latest one counts.
"""
    + FATES,
)
async def give_feedback(
    review_id: Id, body: FeedbackIn, caller: CallerDep, core: CoreDep
) -> LabelEventOut:
    label = body.to_core(caller.principal, review_id)
    labelled = await core.feedback.record(
        label.review_id,
        label.label,
        actor=label.actor,
        channel=Source.API,
        tenant=scope(caller),
        prediction_id=label.prediction_id,
        role=caller.principal.role,
    )
    return LabelEventOut.stored(labelled)


@router.post(
    "/feedback",
    status_code=201,
    responses=responses(404),
    description="""Label many reviews at once (1 to 1,000), each as
`POST /v1/reviews/{id}/feedback` would: all are stored, or none. A client key labels only its
own reviews (any other is a 404 naming its index, `labels[3]: ...`); an admin key any.
"""
    + FATES,
)
async def give_labels(body: LabelsIn, caller: CallerDep, core: CoreDep) -> LabelsOut:
    stored = await core.feedback.record_many(
        body.to_core(caller.principal),
        channel=Source.API,
        tenant=scope(caller),
        role=caller.principal.role,
    )
    return LabelsOut.of(stored)


@router.delete("/feedback/{label_event_id}", responses=responses(404, 409))
async def revoke_feedback(label_event_id: Id, caller: CallerDep, core: CoreDep) -> LabelEventOut:
    """Undo a label: it stays on record with `revoked_at` set and no longer counts."""
    event = await core.feedback.revoke(label_event_id, tenant=scope(caller))
    return LabelEventOut.of(event)
