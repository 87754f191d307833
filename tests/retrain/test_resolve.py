"""Label resolution on a small hand-made store (SQLite and PostgreSQL)."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from core.db import unit_of_work
from core.tables import (
    Actor,
    ActorRole,
    LabelEvent,
    LabelKind,
    Prediction,
    Review,
    Source,
    Split,
    saved_id,
)
from retrain.resolve import Policy, training_set
from serving.base import Label

POS, NEG = Label.POSITIVE, Label.NEGATIVE


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine

    def dataset(self, text: str, label: Label, split: Split = Split.TRAIN) -> None:
        with unit_of_work(self.engine) as session:
            review = Review(text=text, text_hash="-", source=Source.DATASET)
            session.add(review)
            session.flush()
            session.add(
                LabelEvent(
                    review_id=saved_id(review),
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
    ) -> None:
        with unit_of_work(self.engine) as session:
            review = Review(text=text, text_hash="-", source=Source.API, tenant=actor)
            session.add(review)
            session.flush()
            prediction_id = None
            if predicted is not None:
                prediction = Prediction(
                    review_id=saved_id(review),
                    backend="local",
                    model_id="m",
                    label=int(predicted),
                    confidence=0.9,
                    latency_ms=1,
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


def labels_of(engine: Engine, policy: Policy | None = None) -> dict[str, Label]:
    result = training_set(engine, policy)
    return dict(zip(result.texts, result.labels, strict=True))


def test_the_train_split_alone_and_never_the_holdout(store: Store):
    assert labels_of(store.engine) == {"好吃": POS, "难吃": NEG, "冷了": NEG}


def test_one_untrusted_merchant_is_not_enough_but_two_agreeing_are(store: Store):
    store.human("新评论", "m1", POS)
    result = training_set(store.engine)
    assert "新评论" not in result.texts
    assert result.pending == 1
    store.human("新评论", "m2", POS)
    assert labels_of(store.engine)["新评论"] == POS


def test_an_admin_is_trusted_alone_and_overrides_the_dataset(store: Store):
    store.human("冷了", "boss", POS, role=ActorRole.ADMIN)
    assert labels_of(store.engine)["冷了"] == POS


def test_a_holdout_text_stays_out_whoever_labels_it(store: Store):
    store.human("考试题", "boss", NEG, role=ActorRole.ADMIN)
    assert "考试题" not in labels_of(store.engine)


def test_revoked_labels_do_not_count_and_the_latest_of_an_actor_wins(store: Store):
    store.human("新评论", "boss", NEG, role=ActorRole.ADMIN, revoked=True)
    assert "新评论" not in labels_of(store.engine)
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    store.human("另一条", "boss", NEG, role=ActorRole.ADMIN, at=earlier)
    store.human("另一条", "boss", POS, role=ActorRole.ADMIN)
    assert labels_of(store.engine)["另一条"] == POS


def test_trust_grows_with_agreement_and_a_trusted_merchant_counts_alone(store: Store):
    for i in range(20):
        store.human(f"评论{i}", "honest", POS, predicted=POS)
        store.human(f"坏{i}", "liar", NEG, predicted=POS)
    store.human("只有诚实的人说", "honest", NEG, predicted=POS)
    store.human("只有骗子说", "liar", POS, predicted=NEG)
    result = training_set(store.engine)
    assert result.trust["honest"] > 0.8 > 0.2 > result.trust["liar"]
    by_text = dict(zip(result.texts, result.labels, strict=True))
    assert by_text["只有诚实的人说"] == NEG
    assert "只有骗子说" not in by_text
    with Session(store.engine) as session:
        honest = session.get(Actor, "honest")
        assert honest is not None and honest.trust == pytest.approx(
            result.trust["honest"], abs=1e-4
        )


def test_disagreeing_trusted_actors_are_a_reported_conflict(store: Store):
    store.human("难吃", "boss", POS, role=ActorRole.ADMIN)
    store.human("难吃", "chief", NEG, role=ActorRole.ADMIN)
    result = training_set(store.engine)
    (conflict,) = result.conflicts
    assert conflict["text"] == "难吃"
    assert conflict["votes"] == {"boss": "positive", "chief": "negative"}
    assert conflict["kept"] == "negative"
    assert dict(zip(result.texts, result.labels, strict=True))["难吃"] == NEG


def test_caps_hold_back_floods_and_bursts_of_flips(store: Store):
    for i in range(5):
        store.human(f"洪水{i}", "boss", POS, role=ActorRole.ADMIN)
    result = training_set(store.engine, Policy(daily_cap=3))
    assert result.held_back == {"boss": 2}
    assert sum(t.startswith("洪水") for t in result.texts) == 3

    for i in range(4):
        store.human(f"翻转{i}", "flipper", NEG, predicted=POS, role=ActorRole.ADMIN)
    result = training_set(store.engine, Policy(burst_limit=3))
    assert result.held_back["flipper"] == 4
    assert not any(t.startswith("翻转") for t in result.texts)


def test_the_same_inputs_give_the_same_hash(store: Store):
    store.human("新评论", "boss", POS, role=ActorRole.ADMIN)
    assert training_set(store.engine).content_hash == training_set(store.engine).content_hash
