"""Label resolution on a small hand-made store (SQLite and PostgreSQL)."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from core.config import RetrainSettings
from core.labels.resolve import Resolution, training_set
from core.store.db import unit_of_work
from core.store.tables import (
    Actor,
    ActorRole,
    LabelEvent,
    LabelKind,
    Labeller,
    Prediction,
    Review,
    Source,
    Split,
    saved_id,
)
from core.store.texts import text_hash
from serving.base import Label

POS, NEG = Label.POSITIVE, Label.NEGATIVE


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine

    def dataset(self, text: str, label: Label, split: Split = Split.TRAIN) -> None:
        with unit_of_work(self.engine) as session:
            review = Review(text=text, text_hash=text_hash(text), source=Source.DATASET)
            session.add(review)
            session.flush()
            session.add(
                LabelEvent(
                    review_id=saved_id(review),
                    text_hash=text_hash(text),
                    label=int(label),
                    actor="dataset",
                    channel=Source.DATASET,
                    kind=LabelKind.IMPORT,
                    split=split,
                )
            )

    def human(
        self,
        text: str,
        actor: str,
        label: Label,
        *,
        predicted: Label | None = None,
        role: ActorRole = ActorRole.MERCHANT,
        at: datetime | None = None,
        revoked: bool = False,
        tenant: str | None = None,
    ) -> None:
        with unit_of_work(self.engine) as session:
            review = Review(
                text=text, text_hash=text_hash(text), source=Source.API, tenant=tenant or actor
            )
            session.add(review)
            session.flush()
            prediction_id = None
            if predicted is not None:
                prediction = Prediction(  # shown to the labeller before it labelled
                    review_id=saved_id(review),
                    backend="local",
                    model_id="m",
                    label=int(predicted),
                    confidence=0.9,
                    latency_ms=1,
                    created_at=(at or datetime.now(UTC)) - timedelta(seconds=1),
                )
                session.add(prediction)
                session.flush()
                prediction_id = prediction.id
            if session.get(Actor, actor) is None:
                session.add(Actor(name=actor, role=role))
            kind = LabelKind.CONFIRMATION if predicted == label else LabelKind.CORRECTION
            session.add(
                LabelEvent(
                    review_id=saved_id(review),
                    text_hash=text_hash(text),
                    label=int(label),
                    actor=actor,
                    channel=Source.API,
                    kind=kind,
                    prediction_id=prediction_id,
                    created_at=at or datetime.now(UTC),
                    revoked_at=datetime.now(UTC) if revoked else None,
                )
            )


@pytest.fixture
def store(engine: Engine) -> Store:
    store = Store(engine)
    store.dataset("好吃", POS)
    store.dataset("难吃", NEG)
    store.dataset("冷了", NEG)
    store.dataset("考试题", POS, Split.TEST)
    return store


def resolve(engine: Engine, **rules: object) -> Resolution:
    return training_set(engine, RetrainSettings.model_validate(rules))


def labels_of(engine: Engine, **rules: object) -> dict[str, Label]:
    result = resolve(engine, **rules)
    return dict(zip(result.texts, result.labels, strict=True))


def view_of(result: Resolution, tenant: str) -> dict[str, Label]:
    view = result.views[tenant]
    return dict(zip(view.texts, view.labels, strict=True))


def test_the_train_split_alone_and_never_the_holdout(store: Store):
    assert labels_of(store.engine) == {"好吃": POS, "难吃": NEG, "冷了": NEG}


def test_one_tenant_teaches_its_own_view_at_once_and_the_shared_model_once_another_agrees(
    store: Store,
):
    store.human("新评论", "m1", POS)
    result = resolve(store.engine)
    assert "新评论" not in result.texts
    assert view_of(result, "m1") == {"新评论": POS}
    assert result.fates == {"pending": 1}
    store.human("新评论", "m2", POS)
    result = resolve(store.engine)
    assert dict(zip(result.texts, result.labels, strict=True))["新评论"] == POS
    assert result.fates == {"accepted": 2}


def test_one_tenant_is_enough_for_the_shared_model_with_a_quorum_of_one(store: Store):
    store.human("新评论", "m1", POS)
    assert labels_of(store.engine, quorum=1)["新评论"] == POS


def test_actor_names_under_one_client_are_one_voice(store: Store):
    store.human("新评论", "acme/shop-1", POS, tenant="acme")
    store.human("新评论", "acme/shop-2", POS, tenant="acme")
    result = resolve(store.engine)
    assert "新评论" not in result.texts, "two names of one client are not two tenants"
    assert set(result.views) == {"acme"}
    assert result.superseded == 1


def test_an_admin_counts_alone_is_never_capped_and_overrides_the_dataset(store: Store):
    store.human("冷了", "boss", POS, role=ActorRole.ADMIN)
    for i in range(300):
        store.human(f"管理员{i}", "boss", NEG, role=ActorRole.ADMIN)
    by_text = labels_of(store.engine)
    assert by_text["冷了"] == POS
    assert sum(t.startswith("管理员") for t in by_text) == 300


def test_a_holdout_text_stays_out_whoever_labels_it(store: Store):
    store.human("考试题", "boss", NEG, role=ActorRole.ADMIN)
    store.human("考试题", "m1", NEG)
    result = resolve(store.engine)
    assert "考试题" not in result.texts
    assert "m1" not in result.views, "a holdout label teaches no view"


def test_revoked_labels_do_not_count_and_the_latest_of_an_actor_wins(store: Store):
    store.human("新评论", "boss", NEG, role=ActorRole.ADMIN, revoked=True)
    assert "新评论" not in labels_of(store.engine)
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    store.human("另一条", "boss", NEG, role=ActorRole.ADMIN, at=earlier)
    store.human("另一条", "boss", POS, role=ActorRole.ADMIN)
    assert labels_of(store.engine)["另一条"] == POS


def test_a_label_against_the_dataset_teaches_only_the_labellers_view(store: Store):
    store.human("好吃", "m1", NEG)
    result = resolve(store.engine)
    assert dict(zip(result.texts, result.labels, strict=True))["好吃"] == POS
    assert view_of(result, "m1") == {"好吃": NEG}
    assert result.fates == {"held_back": 1}


def test_a_flipping_tenant_is_flagged_by_independent_evidence_and_corroborates_nobody(
    store: Store,
):
    for i in range(12):
        store.dataset(f"金标准{i}", POS)
        store.human(f"金标准{i}", "liar", NEG)
        store.human(f"金标准{i}", "honest", POS)
    store.human("骗子和别人都说", "liar", NEG)
    store.human("骗子和别人都说", "other", NEG)
    result = resolve(store.engine)
    assert result.flagged == ["liar"]
    assert result.labellers["liar"].trust < 0.2 < 0.85 < result.labellers["honest"].trust
    assert "骗子和别人都说" not in result.texts, "a flagged tenant is no second voice"
    with Session(store.engine) as session:
        liar = session.get(Labeller, "liar")
        assert liar is not None and liar.flagged and liar.checked == 13


def test_trust_never_depends_on_the_model_being_corrected(store: Store):
    for i in range(20):
        store.human(f"纠正{i}", "corrector", NEG, predicted=POS)
    result = resolve(store.engine)
    assert result.labellers["corrector"].checked == 0
    assert result.labellers["corrector"].trust == 0.5
    assert not result.flagged


def test_tenants_who_disagree_are_a_reported_conflict(store: Store):
    store.human("新评论", "m1", POS)
    store.human("新评论", "m2", NEG)
    result = resolve(store.engine)
    (conflict,) = result.conflicts
    assert conflict["votes"] == {"m1": "positive", "m2": "negative"}
    assert "新评论" not in result.texts
    assert view_of(result, "m1") == {"新评论": POS}
    assert view_of(result, "m2") == {"新评论": NEG}


def test_verdicts_left_alone_before_the_latest_label_confirm_them_in_the_own_view(
    store: Store, engine: Engine
):
    with unit_of_work(engine) as session:
        for text, label in (("看过没改", POS), ("还没看到", NEG)):
            review = Review(text=text, text_hash=text_hash(text), source=Source.API, tenant="m1")
            session.add(review)
            session.flush()
            seen = text == "看过没改"
            moment = datetime.now(UTC) + (timedelta(minutes=-10) if seen else timedelta(hours=1))
            session.add(
                Prediction(
                    review_id=saved_id(review),
                    backend="local",
                    model_id="m",
                    label=int(label),
                    latency_ms=1,
                    created_at=moment,
                )
            )
    store.human("改过的", "m1", NEG, predicted=POS)
    result = resolve(store.engine)
    assert view_of(result, "m1") == {"改过的": NEG, "看过没改": POS}
    assert (result.views["m1"].explicit, result.views["m1"].implicit) == (1, 1)
    assert "看过没改" not in result.texts, "implicit confirmations teach nobody else"
    off = resolve(store.engine, implicit_confirmations=False)
    assert view_of(off, "m1") == {"改过的": NEG}


def test_the_same_inputs_give_the_same_hash(store: Store):
    store.human("新评论", "boss", POS, role=ActorRole.ADMIN)
    assert resolve(store.engine).content_hash == resolve(store.engine).content_hash
