from datetime import timedelta

import pytest
from sqlmodel import Session, col, func, select

from core.classify.service import ReviewInput
from core.errors import Conflict, NotFound, PermissionDenied
from core.labels.feedback import LabelInput, Labelled
from core.labels.rules import FateStatus
from core.store.tables import ActorRole, LabelEvent, LabelKind, Review, Source, Split, saved_id
from core.wiring import Core
from serving.base import Label


@pytest.fixture
async def classified(core: Core):
    items = [ReviewInput("太难吃了，送得又慢")]
    return (await core.classification.classify(items, source=Source.API, tenant="acme"))[0]


async def test_agreeing_is_a_confirmation_and_disagreeing_a_correction(core: Core, classified):
    predicted = classified.verdict.label
    other = Label(1 - predicted)
    confirm = (
        await core.feedback.record(classified.review_id, predicted, actor="a", channel=Source.API)
    ).event
    correct = (
        await core.feedback.record(classified.review_id, other, actor="a", channel=Source.API)
    ).event
    assert confirm.kind == LabelKind.CONFIRMATION
    assert correct.kind == LabelKind.CORRECTION
    assert confirm.prediction_id == correct.prediction_id == classified.prediction_id
    with Session(core.engine) as session:
        events = session.exec(select(LabelEvent).where(LabelEvent.actor == "a")).all()
    assert len(events) == 2, "labels are appended, never replaced"


async def test_a_tenant_sees_only_its_own_reviews(core: Core, classified):
    with pytest.raises(NotFound):
        await core.feedback.record(
            classified.review_id, Label.POSITIVE, actor="b", channel=Source.API, tenant="other"
        )
    with pytest.raises(NotFound):
        await core.feedback.record(10**9, Label.POSITIVE, actor="b", channel=Source.API)


async def test_revoking_marks_the_event_and_only_once(core: Core, classified):
    event = (
        await core.feedback.record(
            classified.review_id, Label.POSITIVE, actor="a", channel=Source.API
        )
    ).event
    assert event.id is not None
    with pytest.raises(PermissionDenied):
        await core.feedback.revoke(event.id, actor="someone-else")
    revoked = await core.feedback.revoke(event.id, actor="a", within=timedelta(minutes=10))
    assert revoked.revoked_at is not None
    with pytest.raises(Conflict, match="already revoked"):
        await core.feedback.revoke(event.id)


async def test_undo_has_a_time_limit(core: Core, classified):
    event = (
        await core.feedback.record(
            classified.review_id, Label.POSITIVE, actor="a", channel=Source.API
        )
    ).event
    assert event.id is not None
    with pytest.raises(Conflict, match="no longer be undone"):
        await core.feedback.revoke(event.id, within=timedelta(seconds=-1))


async def test_dataset_labels_cannot_be_revoked(core: Core):
    with Session(core.engine) as session:
        imported = session.exec(
            select(LabelEvent).where(LabelEvent.kind == LabelKind.IMPORT)
        ).first()
    assert imported is not None and imported.id is not None
    with pytest.raises(NotFound):
        await core.feedback.revoke(imported.id)


async def classify(core: Core, text: str, tenant: str):
    items = [ReviewInput(text)]
    return (await core.classification.classify(items, source=Source.API, tenant=tenant))[0]


def dataset_text(core: Core, split: Split) -> tuple[str, Label]:
    with Session(core.engine) as session:
        event, review = session.exec(
            select(LabelEvent, Review)
            .join(Review, col(Review.id) == LabelEvent.review_id)
            .where(LabelEvent.kind == LabelKind.IMPORT, LabelEvent.split == split)
        ).first() or pytest.fail("no dataset labels")
    return review.text, Label(event.label)


async def test_a_tenants_label_teaches_its_own_view_until_another_tenant_agrees(core: Core):
    mine = await classify(core, "这家的酸菜鱼一绝，下次还点", "acme")
    theirs = await classify(core, "这家的酸菜鱼一绝，下次还点", "globex")
    first = await core.feedback.record(
        mine.review_id, Label.POSITIVE, actor="acme", channel=Source.API, tenant="acme"
    )
    assert (first.fate.status, first.fate.code) == (FateStatus.PENDING, "awaiting_corroboration")
    assert first.fate.own_view and not first.trained
    assert "your own model" in first.fate.reason

    second = await core.feedback.record(
        theirs.review_id, Label.POSITIVE, actor="globex", channel=Source.API, tenant="globex"
    )
    assert (second.fate.status, second.fate.code) == (FateStatus.ACCEPTED, "corroborated")
    assert second.fate.reason == "2 tenants gave the same label: joins the shared model"
    (now,) = core.feedback.fates(mine.review_id).values()
    assert now.event.id == first.event.id
    assert now.fate.code == "corroborated", "the first label is corroborated too"


async def test_an_admins_label_is_accepted_and_decides_for_the_others(core: Core):
    review = await classify(core, "包装漏了一袋汤，客服也不理", "acme")
    merchant = await core.feedback.record(
        review.review_id, Label.POSITIVE, actor="acme", channel=Source.API, tenant="acme"
    )
    admin = await core.feedback.record(
        review.review_id, Label.NEGATIVE, actor="root", channel=Source.API, role=ActorRole.ADMIN
    )
    assert (admin.fate.status, admin.fate.code) == (FateStatus.ACCEPTED, "admin")
    fates = core.feedback.fates(review.review_id)
    assert fates[saved_id(merchant.event)].fate.code == "contradicts_admin"
    assert fates[saved_id(merchant.event)].fate.status == FateStatus.HELD_BACK


async def test_the_dataset_and_the_holdout_decide_what_joins_the_shared_model(core: Core):
    text, label = dataset_text(core, Split.TRAIN)
    review = await classify(core, text, "acme")
    agrees = await core.feedback.record(review.review_id, label, actor="a", channel=Source.API)
    assert agrees.fate.code == "dataset_agrees"
    other = await classify(core, text, "globex")
    against = await core.feedback.record(
        other.review_id, Label(1 - label), actor="g", channel=Source.API
    )
    assert (against.fate.status, against.fate.code) == (FateStatus.HELD_BACK, "contradicts_dataset")
    assert against.fate.own_view

    held, held_label = dataset_text(core, Split.TEST)
    frozen = await classify(core, held, "acme")
    holdout = await core.feedback.record(
        frozen.review_id, held_label, actor="a", channel=Source.API
    )
    assert (holdout.fate.code, holdout.fate.own_view) == ("holdout", False)


async def test_a_later_label_supersedes_and_a_revoked_one_has_no_fate(core: Core, classified):
    earlier = await core.feedback.record(
        classified.review_id, Label.POSITIVE, actor="acme", channel=Source.API
    )
    later = await core.feedback.record(
        classified.review_id, Label.NEGATIVE, actor="acme", channel=Source.API
    )
    fates = core.feedback.fates(classified.review_id)
    assert fates[saved_id(earlier.event)].fate.code == "superseded"
    assert fates[saved_id(later.event)].fate.code == "awaiting_corroboration"
    await core.feedback.revoke(saved_id(later.event))
    assert saved_id(later.event) not in core.feedback.fates(classified.review_id)

    shown = await core.feedback.review(classified.review_id, tenant="acme")
    assert shown.record.review.id == classified.review_id
    assert [(e.id, f is None) for e, f in shown.labels] == [
        (earlier.event.id, False),
        (later.event.id, True),
    ]
    with pytest.raises(NotFound):
        await core.feedback.review(classified.review_id, tenant="globex")


def live_labels(core: Core) -> int:
    with Session(core.engine) as session:
        return session.exec(
            select(func.count()).select_from(LabelEvent).where(LabelEvent.kind != LabelKind.IMPORT)
        ).one()


async def test_many_labels_are_stored_in_one_transaction_all_or_none(core: Core):
    acme = [await classify(core, f"第{i}份，味道一般", "acme") for i in range(3)]
    globex = await classify(core, "别人家的评论", "globex")
    labels = [LabelInput(r.review_id, Label.NEGATIVE, "acme/shop-1") for r in acme]

    with pytest.raises(NotFound, match=r"^labels\[2\]: review \d+ does not exist"):
        await core.feedback.record_many(
            [*labels[:2], LabelInput(globex.review_id, Label.NEGATIVE, "acme/shop-1")],
            channel=Source.API,
            tenant="acme",
        )
    assert live_labels(core) == 0

    seen: list[int] = []

    def hook(session: Session, stored: list[Labelled]) -> None:
        seen.extend(saved_id(s.event) for s in stored)
        assert session.get(LabelEvent, seen[0]) is not None  # flushed, in this transaction

    stored = await core.feedback.record_many(
        labels, channel=Source.API, tenant="acme", on_stored=hook
    )
    assert [s.event.review_id for s in stored] == [r.review_id for r in acme]
    assert seen == [saved_id(s.event) for s in stored]
    assert {s.fate.code for s in stored} == {"awaiting_corroboration"}
    assert live_labels(core) == 3


async def test_a_failing_hook_stores_nothing(core: Core, classified):
    def hook(_session: Session, _stored: list[Labelled]) -> None:
        raise RuntimeError("the response could not be stored")

    with pytest.raises(RuntimeError):
        await core.feedback.record_many(
            [LabelInput(classified.review_id, Label.POSITIVE, "a")],
            channel=Source.API,
            on_stored=hook,
        )
    assert live_labels(core) == 0
