import asyncio
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from core.classification import ReviewInput
from core.errors import Conflict, NotFound, PermissionDenied
from core.tables import LabelEvent, LabelKind, Source
from core.wiring import Core
from serving.base import Label


@pytest.fixture
def classified(core: Core):
    items = [ReviewInput("太难吃了，送得又慢")]
    return asyncio.run(core.classification.classify(items, source=Source.API, tenant="acme"))[0]


def test_agreeing_is_a_confirmation_and_disagreeing_a_correction(core: Core, classified):
    predicted = classified.verdict.label
    other = Label(1 - predicted)
    confirm = core.feedback.record(classified.review_id, predicted, actor="a", channel=Source.API)
    correct = core.feedback.record(classified.review_id, other, actor="a", channel=Source.API)
    assert confirm.kind == LabelKind.CONFIRMATION
    assert correct.kind == LabelKind.CORRECTION
    assert confirm.prediction_id == correct.prediction_id == classified.prediction_id
    with Session(core.engine) as session:
        events = session.exec(select(LabelEvent).where(LabelEvent.actor == "a")).all()
    assert len(events) == 2, "labels are appended, never replaced"


def test_a_tenant_sees_only_its_own_reviews(core: Core, classified):
    with pytest.raises(NotFound):
        core.feedback.record(
            classified.review_id, Label.POSITIVE, actor="b", channel=Source.API, tenant="other"
        )
    with pytest.raises(NotFound):
        core.feedback.record(10**9, Label.POSITIVE, actor="b", channel=Source.API)


def test_revoking_marks_the_event_and_only_once(core: Core, classified):
    event = core.feedback.record(
        classified.review_id, Label.POSITIVE, actor="a", channel=Source.API
    )
    assert event.id is not None
    with pytest.raises(PermissionDenied):
        core.feedback.revoke(event.id, actor="someone-else")
    revoked = core.feedback.revoke(event.id, actor="a", within=timedelta(minutes=10))
    assert revoked.revoked_at is not None
    with pytest.raises(Conflict, match="already revoked"):
        core.feedback.revoke(event.id)


def test_undo_has_a_time_limit(core: Core, classified):
    event = core.feedback.record(
        classified.review_id, Label.POSITIVE, actor="a", channel=Source.API
    )
    assert event.id is not None
    with pytest.raises(Conflict, match="no longer be undone"):
        core.feedback.revoke(event.id, within=timedelta(seconds=-1))


def test_dataset_labels_cannot_be_revoked(core: Core):
    with Session(core.engine) as session:
        imported = session.exec(
            select(LabelEvent).where(LabelEvent.kind == LabelKind.IMPORT)
        ).first()
    assert imported is not None and imported.id is not None
    with pytest.raises(NotFound):
        core.feedback.revoke(imported.id)
