"""The learning loop at a glance (SQLite and PostgreSQL): what the store holds, read as stored."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, select

from core.config import RetrainSettings
from core.labels.overview import VERSIONS_SHOWN, LoopOverview, overview
from core.labels.resolve import training_set
from core.models import registry
from core.store.db import unit_of_work
from core.store.tables import (
    LabelConflict,
    LabelEvent,
    LabelKind,
    Labeller,
    ModelStatus,
    Prediction,
    RetrainRequest,
    Review,
    Source,
    saved_id,
    utcnow,
)
from core.store.texts import text_hash
from serving.base import Label

POS, NEG = Label.POSITIVE, Label.NEGATIVE


def review(
    engine: Engine,
    tenant: str,
    text: str,
    *,
    predicted: Label = POS,
    label: Label | None = None,
    at: datetime | None = None,
    revoked: bool = False,
) -> None:
    """A tenant's review with its prediction and, if ``label``, the tenant's label of it."""
    at = at or utcnow()
    with unit_of_work(engine) as session:
        row = Review(
            text=text, text_hash=text_hash(text), source=Source.API, tenant=tenant, created_at=at
        )
        session.add(row)
        session.flush()
        prediction = Prediction(
            review_id=saved_id(row),
            backend="local",
            model_id="m",
            label=int(predicted),
            confidence=0.9,
            latency_ms=1,
            created_at=at,
        )
        session.add(prediction)
        session.flush()
        if label is not None:
            session.add(
                LabelEvent(
                    review_id=saved_id(row),
                    text_hash=text_hash(text),
                    label=int(label),
                    actor=tenant,
                    channel=Source.API,
                    kind=LabelKind.CONFIRMATION if label == predicted else LabelKind.CORRECTION,
                    prediction_id=prediction.id,
                    created_at=at + timedelta(minutes=1),
                    revoked_at=utcnow() if revoked else None,
                )
            )


def test_versions_carry_their_figures_and_the_gates_decision(engine: Engine):
    first = registry.register(
        engine,
        backend="local",
        model_ref="a",
        metrics={"accuracy": 0.9, "macro_f1": 0.89, "ece": 0.03, "curves": {"train": []}},
    )
    registry.promote(engine, saved_id(first))
    reason = "accuracy 0.5 is below"
    gate = {"promote": False, "reason": reason, "candidate_accuracy": 0.5}
    refused = registry.register(
        engine, backend="local", model_ref="b", metrics={"accuracy": 0.5, "gate": gate}
    )
    registry.decide(engine, saved_id(refused), False, reason, refused.metrics)
    forced = registry.register(engine, backend="local", model_ref="c", metrics={})
    registry.promote(engine, saved_id(forced), "forced", {"forced": {"by": "ops", "at": "now"}})

    seen = overview(engine)
    assert [v.id for v in seen.versions] == [forced.id, refused.id, first.id]
    latest, rejected, retired = seen.versions
    assert (latest.status, latest.accuracy, latest.forced) == (
        ModelStatus.ACTIVE,
        None,
        {"by": "ops", "at": "now"},
    )
    assert (rejected.status, rejected.gate) == (ModelStatus.REJECTED, gate)
    assert (retired.accuracy, retired.macro_f1, retired.ece) == (0.9, 0.89, 0.03)
    assert retired.gate is None and not retired.decided
    assert [v.id for v in seen.decisions] == [forced.id, refused.id]
    assert seen.rollback_to == first.id
    assert seen.versions_total == 3


def test_the_active_version_is_shown_however_old(engine: Engine):
    active = registry.register(engine, backend="local", model_ref="old", metrics={})
    registry.promote(engine, saved_id(active))
    for i in range(VERSIONS_SHOWN + 2):
        registry.register(engine, backend="local", model_ref=f"new-{i}", metrics={})
    seen = overview(engine)
    assert len(seen.versions) == VERSIONS_SHOWN + 1
    assert seen.versions[-1].id == active.id and seen.versions[-1].status == ModelStatus.ACTIVE
    assert seen.versions_total == VERSIONS_SHOWN + 3
    assert seen.rollback_to is None, "no earlier version to go back to"


def test_pending_and_recently_handled_retrain_requests(engine: Engine):
    with unit_of_work(engine) as session:
        done = RetrainRequest(
            requested_by="ops", reason="nightly", handled_at=utcnow(), outcome="promoted"
        )
        session.add_all([done, RetrainRequest(requested_by="root", reason="many corrections")])
    seen = overview(engine)
    assert [(r.requested_by, r.reason) for r in seen.pending] == [("root", "many corrections")]
    assert [(r.reason, r.outcome) for r in seen.handled] == [("nightly", "promoted")]


def test_correction_rates_cover_the_window_and_live_human_labels_only(engine: Engine):
    long_ago = utcnow() - timedelta(days=40)
    for i in range(10):
        review(engine, "acme", f"acme{i}", predicted=POS, label=NEG if i < 3 else POS)
    review(engine, "acme", "撤回", predicted=POS, label=NEG, revoked=True)
    review(engine, "acme", "没人标", predicted=POS)
    review(engine, "globex", "globex", predicted=POS, label=NEG)
    review(engine, "initech", "很久以前", predicted=POS, label=NEG, at=long_ago)

    rates = overview(engine, window_days=7, min_labels=5).corrections
    by_tenant = {t.tenant: t for t in rates.tenants}
    assert set(by_tenant) == {"acme", "globex"}, "initech's review is older than the window"
    acme = by_tenant["acme"]
    assert (acme.reviews, acme.labels, acme.corrections, acme.rate) == (12, 10, 3, 0.3)
    assert [t.tenant for t in rates.tenants] == ["globex", "acme"], "highest rate first"
    assert [t.tenant for t in rates.ranked] == ["acme"], "globex has 1 label, under 5"
    assert (rates.total.reviews, rates.total.labels, rates.total.corrections) == (13, 11, 4)
    month = overview(engine, window_days=60).corrections
    assert {t.tenant for t in month.tenants} == {"acme", "globex", "initech"}


def test_labellers_and_conflicts_are_those_the_last_resolution_stored(engine: Engine):
    assert overview(engine).labellers.resolved_at is None
    review(engine, "m1", "两家看法不同", label=POS)
    review(engine, "m2", "两家看法不同", label=NEG)
    review(engine, "m3", "只有一家", label=POS)
    rules = RetrainSettings()
    training_set(engine, rules)

    seen = overview(engine)
    (conflict,) = seen.conflicts
    assert conflict.text == "两家看法不同"
    assert conflict.votes == {"m1": "positive", "m2": "negative"}
    assert (conflict.voices, seen.conflicts_total) == (2, 1)
    labellers = seen.labellers
    assert {labeller.tenant for labeller in labellers.shown} == {"m1", "m2"}, "m3: pending"
    assert (labellers.total, labellers.held_back, labellers.flagged) == (3, 2, 0)
    assert labellers.resolved_at is not None

    review(engine, "m1", "两家看法不同", label=NEG)
    training_set(engine, rules)
    with Session(engine) as session:
        assert session.exec(select(LabelConflict)).all() == [], "each resolution replaces them"
    assert overview(engine).conflicts_total == 0


async def test_the_service_reads_the_same(engine: Engine):
    registry.register(engine, backend="local", model_ref="a", metrics={"accuracy": 0.8})
    seen = await LoopOverview(engine).overview(window_days=1)
    assert [v.accuracy for v in seen.versions] == [0.8]
    assert seen.corrections.window_days == 1
    assert datetime.now(UTC) - seen.versions[0].created_at < timedelta(minutes=1)


def test_flagged_labellers_come_first_then_the_least_trusted(engine: Engine):
    with unit_of_work(engine) as session:
        session.add_all(
            [
                Labeller(tenant="honest", labels=50, accepted=50, trust=0.95),
                Labeller(tenant="doubted", labels=20, held_back=5, trust=0.7),
                Labeller(tenant="unsure", labels=20, held_back=2, trust=0.8),
                Labeller(tenant="liar", labels=30, held_back=30, trust=0.1, flagged=True),
            ]
        )
    labellers = overview(engine).labellers
    assert [labeller.tenant for labeller in labellers.shown] == ["liar", "doubted", "unsure"]
    assert (labellers.total, labellers.flagged, labellers.held_back) == (4, 1, 3)
