import asyncio

import pytest
from sqlmodel import Session, select

from core.labels.resolve import training_set
from core.models import registry
from core.store.db import unit_of_work
from core.store.tables import ActorRole, LabelEvent, ModelStatus, Review, Source, Split, saved_id
from core.store.texts import text_hash
from core.wiring import Core
from retrain.cycle import run_cycle
from serving.base import Label


def test_the_first_model_is_active_and_meets_the_accuracy_bar(core: Core):
    version = registry.active(core.engine)
    assert version.backend == "local"
    assert version.metrics["accuracy"] >= 0.905
    assert version.metrics["ece"] < 0.05
    assert version.metrics["train_seconds"] < 10
    assert version.snapshot is not None


def test_the_training_set_never_contains_holdout_texts(core: Core):
    data = training_set(core.engine)
    with Session(core.engine) as session:
        holdout = set(
            session.exec(
                select(Review.text).join(LabelEvent).where(LabelEvent.split == Split.TEST)
            ).all()
        )
    assert not holdout & set(data.texts)
    assert len(data.texts) == len(set(data.texts))
    assert 8300 < len(data.texts) <= 8390


def label(core: Core, text: str, value: Label, *, revoked: bool = False) -> None:
    """An admin's label, which the learning loop trusts on its own."""
    with unit_of_work(core.engine) as session:
        review = Review(text=text, text_hash=text_hash(text), source=Source.API, tenant="acme")
        session.add(review)
    labelled = asyncio.run(
        core.feedback.record(
            saved_id(review), value, actor="boss", channel=Source.API, role=ActorRole.ADMIN
        )
    )
    if revoked:
        asyncio.run(core.feedback.revoke(saved_id(labelled.event)))


def test_human_labels_join_and_override_and_revoked_ones_do_not(core: Core):
    base = training_set(core.engine)
    train_text = next(
        t for t, lab in zip(base.texts, base.labels, strict=True) if lab == Label.POSITIVE
    )
    label(core, train_text, Label.NEGATIVE)
    label(core, "一个全新的评论，菜很好", Label.POSITIVE)
    label(core, "撤销了的评论", Label.NEGATIVE, revoked=True)
    data = training_set(core.engine)
    by_text = dict(zip(data.texts, data.labels, strict=True))
    assert by_text[train_text] == Label.NEGATIVE
    assert by_text["一个全新的评论，菜很好"] == Label.POSITIVE
    assert "撤销了的评论" not in by_text
    assert data.human == 2
    assert data.content_hash != base.content_hash


def test_a_holdout_text_labelled_by_a_human_stays_out(core: Core):
    with Session(core.engine) as session:
        holdout_text = session.exec(
            select(Review.text).join(LabelEvent).where(LabelEvent.split == Split.TEST)
        ).first()
    assert holdout_text is not None
    label(core, holdout_text, Label.POSITIVE)
    assert holdout_text not in training_set(core.engine).texts


@pytest.mark.slow
def test_a_second_model_is_written_to_a_new_folder_and_gated(core: Core):
    first = registry.active(core.engine)
    result = asyncio.run(run_cycle(core, "local", force=True))
    second = result.version
    assert second is not None
    assert second.status == ModelStatus.ACTIVE, "the same data gives a model as good: promoted"
    assert second.model_ref != first.model_ref
    assert (core.settings.local.dir / second.model_ref / "manifest.json").is_file()
    assert (core.settings.local.dir / first.model_ref / "manifest.json").is_file()
