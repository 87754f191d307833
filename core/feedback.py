"""Human labels: record a confirmation or correction of a prediction, and revoke it (undo)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from core.db import unit_of_work
from core.errors import Conflict, NotFound, PermissionDenied
from core.tables import (
    Actor,
    ActorRole,
    LabelEvent,
    LabelKind,
    Prediction,
    Review,
    Source,
    as_utc,
    utcnow,
)
from serving.base import Label


class FeedbackService:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(
        self,
        review_id: int,
        label: Label,
        *,
        actor: str,
        channel: Source,
        tenant: str | None = None,
        prediction_id: int | None = None,
        role: ActorRole = ActorRole.MERCHANT,
    ) -> LabelEvent:
        """Append a label for a review; it confirms or corrects the prediction it answers.

        ``tenant`` limits the caller to its own reviews; ``prediction_id`` names the prediction
        being answered (default: the review's latest). Earlier labels by the same actor stay;
        the latest counts. ``role`` is what the front door knows of the actor (admins are
        trusted by the learning loop).
        """
        with unit_of_work(self._engine) as session:
            _own_review(session, review_id, tenant)
            _remember_actor(session, actor, role)
            prediction = _answered_prediction(session, review_id, prediction_id)
            confirms = prediction is not None and prediction.label == int(label)
            event = LabelEvent(
                review_id=review_id,
                label=int(label),
                actor=actor,
                channel=channel,
                kind=LabelKind.CONFIRMATION if confirms else LabelKind.CORRECTION,
                prediction_id=prediction.id if prediction is not None else None,
            )
            session.add(event)
            session.flush()
            return event

    def revoke(
        self,
        label_event_id: int,
        *,
        actor: str | None = None,
        tenant: str | None = None,
        within: timedelta | None = None,
    ) -> LabelEvent:
        """Mark a human label as revoked. ``actor``/``tenant`` restrict who may; ``within``
        limits how long after the label it may be undone."""
        with unit_of_work(self._engine) as session:
            event = session.get(LabelEvent, label_event_id, with_for_update=True)
            if event is None or event.kind == LabelKind.IMPORT:
                raise NotFound(f"label {label_event_id} does not exist")
            _own_review(session, event.review_id, tenant, missing=f"label {label_event_id}")
            if actor is not None and event.actor != actor:
                raise PermissionDenied(f"label {label_event_id} was given by someone else")
            if event.revoked_at is not None:
                raise Conflict(f"label {label_event_id} was already revoked")
            if within is not None and utcnow() - as_utc(event.created_at) > within:
                minutes = int(within.total_seconds() // 60)
                raise Conflict(
                    f"label {label_event_id} can no longer be undone (after {minutes} min)"
                )
            event.revoked_at = utcnow()
            session.add(event)
            return event


def _remember_actor(session: Session, name: str, role: ActorRole) -> None:
    """Insert the actor, or update its role; safe when two labels of a new actor race."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    row = Actor(name=name, role=role).model_dump()
    session.execute(
        insert(Actor)
        .values(row)
        .on_conflict_do_update(index_elements=["name"], set_={"role": role})
    )


def _own_review(
    session: Session, review_id: int, tenant: str | None, missing: str | None = None
) -> Review:
    review = session.get(Review, review_id)
    if review is None or (tenant is not None and review.tenant != tenant):
        raise NotFound(f"{missing or f'review {review_id}'} does not exist")
    return review


def _answered_prediction(
    session: Session, review_id: int, prediction_id: int | None
) -> Prediction | None:
    query = select(Prediction).where(Prediction.review_id == review_id)
    if prediction_id is not None:
        prediction = session.exec(query.where(Prediction.id == prediction_id)).first()
        if prediction is None:
            raise NotFound(f"prediction {prediction_id} of review {review_id} does not exist")
        return prediction
    return session.exec(query.order_by(col(Prediction.id).desc())).first()
