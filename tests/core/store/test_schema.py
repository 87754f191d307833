"""The store on SQLite and PostgreSQL: migrations, tables, constraints, the model registry."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, select

from core.config import DBSettings
from core.errors import Conflict, NoActiveModel, NotFound
from core.models import registry
from core.store.db import make_engine, unit_of_work
from core.store.tables import (
    LabelEvent,
    LabelKind,
    ModelStatus,
    Prediction,
    Review,
    Source,
    saved_id,
)


def test_migrations_create_every_table(engine: Engine):
    tables = set(inspect(engine).get_table_names())
    assert {"review", "prediction", "label_event", "model_version", "alembic_version"} <= tables


def test_the_migrations_build_exactly_the_tables_the_code_declares(engine: Engine):
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    engine = make_engine(
        DBSettings(url=f"sqlite:///{tmp_path / 'sub' / 'w.db'}", busy_timeout_ms=1234)
    )
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 1234
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    assert (tmp_path / "sub").is_dir()


def test_a_review_its_prediction_and_labels_round_trip(engine: Engine):
    with unit_of_work(engine) as session:
        version = registry_version(session)
        review = Review(
            text="好吃", text_hash="h", source=Source.API, tenant="acme", external_id="e1"
        )
        session.add(review)
        session.flush()
        prediction = Prediction(
            review_id=saved_id(review),
            model_version_id=saved_id(version),
            backend="local",
            model_id="m",
            label=1,
            confidence=0.9,
            latency_ms=1.5,
        )
        session.add(prediction)
        session.flush()
        session.add(
            LabelEvent(
                review_id=saved_id(review),
                label=0,
                actor="u1",
                channel=Source.API,
                kind=LabelKind.CORRECTION,
                prediction_id=saved_id(prediction),
            )
        )
    with Session(engine) as session:
        event = session.exec(select(LabelEvent)).one()
        assert (event.kind, event.label, event.revoked_at) == ("correction", 0, None)
        assert event.created_at.tzinfo is not None or engine.dialect.name == "sqlite"
        assert session.exec(select(Prediction)).one().confidence == pytest.approx(0.9)


def test_an_external_id_is_unique_per_source_and_tenant(engine: Engine):
    with unit_of_work(engine) as session:
        session.add(Review(text="a", text_hash="h", source=Source.API, tenant="t", external_id="x"))
        session.add(
            Review(text="b", text_hash="h", source=Source.API, tenant="other", external_id="x")
        )
        session.add(Review(text="c", text_hash="h", source=Source.API, tenant="t"))
        session.add(Review(text="d", text_hash="h", source=Source.API, tenant="t"))
    with pytest.raises(IntegrityError), unit_of_work(engine) as session:
        session.add(Review(text="e", text_hash="h", source=Source.API, tenant="t", external_id="x"))


def test_a_failed_unit_of_work_stores_nothing(engine: Engine):
    with pytest.raises(RuntimeError), unit_of_work(engine) as session:
        session.add(Review(text="a", text_hash="h", source=Source.CLI))
        session.flush()
        raise RuntimeError("boom")
    with Session(engine) as session:
        assert session.exec(select(Review)).all() == []


def test_registry_promotes_retires_and_rolls_back(engine: Engine):
    with pytest.raises(NoActiveModel):
        registry.active(engine)
    first = registry.register(engine, backend="local", model_ref="v1", metrics={})
    first = registry.record_metrics(
        engine, saved_id(first), {"accuracy": 0.9}, activate_if_none=True
    )
    assert first.status == ModelStatus.ACTIVE
    second = registry.register(engine, backend="local", model_ref="v2", metrics={"accuracy": 0.91})
    assert (
        registry.record_metrics(
            engine, saved_id(second), {"accuracy": 0.91}, activate_if_none=True
        ).status
        == "candidate"
    )

    registry.promote(engine, saved_id(second))
    assert registry.active(engine).id == second.id
    assert registry.get(engine, saved_id(first)).status == ModelStatus.RETIRED
    with pytest.raises(Conflict):
        registry.promote(engine, saved_id(second))

    assert registry.rollback(engine).id == first.id
    assert registry.get(engine, saved_id(second)).status == ModelStatus.RETIRED
    assert [v.status for v in registry.list_versions(engine)] == ["retired", "active"]
    with pytest.raises(NotFound):
        registry.promote(engine, 999)


def registry_version(session: Session):
    from core.store.tables import ModelVersion

    version = ModelVersion(backend="local", model_ref="v", metrics={"accuracy": 0.9})
    session.add(version)
    session.flush()
    return version
