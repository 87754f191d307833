"""Human labels: record a confirmation or correction of a prediction, and revoke it (undo)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from core.classify import reviews
from core.config import RetrainSettings
from core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from core.events import Events
from core.labels.fates import fates_of_texts, trained_upto
from core.labels.rules import Fate
from core.store.db import run_store_work, unit_of_work
from core.store.tables import (
    Actor,
    ActorRole,
    LabelEvent,
    LabelKind,
    Prediction,
    Review,
    Source,
    as_utc,
    saved_id,
    utcnow,
)
from serving.base import Label


@dataclass(frozen=True)
class LabelInput:
    """One label of a bulk request."""

    review_id: int
    label: Label
    actor: str
    prediction_id: int | None = None


@dataclass(frozen=True)
class Labelled:
    """A stored label and what became of it."""

    event: LabelEvent
    fate: Fate
    trained: bool
    """Whether a model answering the labeller now was trained with it."""


StoreHook = Callable[[Session, list[Labelled]], None]
"""Called inside the labels' transaction once they are flushed (e.g. to store a webhook's
response with them): if it raises, nothing is stored."""


@dataclass(frozen=True)
class LabelledReview:
    """A review with every human label (revoked ones included, oldest first) and the fate of
    each live one."""

    record: reviews.ReviewRecord
    labels: list[tuple[LabelEvent, Labelled | None]]
    """Each label with what became of it; ``None`` for a revoked label."""


@dataclass(frozen=True)
class LabelsRecorded:
    """Published once human labels are stored (each carries its channel)."""

    events: list[LabelEvent]


@dataclass(frozen=True)
class LabelRevoked:
    """Published once a human label is revoked."""

    event: LabelEvent


class FeedbackService:
    """Human labels. The async methods are the front doors', called from their event loops
    (their store work runs where ``run_store_work`` puts it)."""

    def __init__(
        self, engine: Engine, rules: RetrainSettings | None = None, events: Events | None = None
    ) -> None:
        self._engine = engine
        self._rules = rules or RetrainSettings()
        self._events = events or Events()

    async def record(
        self,
        review_id: int,
        label: Label,
        *,
        actor: str,
        channel: Source,
        tenant: str | None = None,
        prediction_id: int | None = None,
        role: ActorRole = ActorRole.MERCHANT,
    ) -> Labelled:
        """Append a label for a review; it confirms or corrects the prediction it answers.

        ``tenant`` limits the caller to its own reviews; ``prediction_id`` names the prediction
        being answered (default: the review's latest). Earlier labels by the same actor stay;
        the latest counts. ``role`` is what the front door knows of the actor (admins' labels
        join the shared model at once).
        """
        (labelled,) = await run_store_work(
            self._engine,
            partial(
                self._record,
                [LabelInput(review_id, label, actor, prediction_id)],
                channel=channel,
                tenant=tenant,
                role=role,
                numbered=False,
            ),
        )
        self._events.publish(LabelsRecorded([labelled.event]))
        return labelled

    async def record_many(
        self,
        labels: Sequence[LabelInput],
        *,
        channel: Source,
        tenant: str | None = None,
        role: ActorRole = ActorRole.MERCHANT,
        on_stored: StoreHook | None = None,
    ) -> list[Labelled]:
        """Append many labels in one transaction: all are stored, or none (the error names the
        first one that could not be, as ``labels[i]``). ``on_stored`` runs in that transaction,
        after them."""
        stored = await run_store_work(
            self._engine,
            partial(
                self._record,
                labels,
                channel=channel,
                tenant=tenant,
                role=role,
                on_stored=on_stored,
                numbered=True,
            ),
        )
        self._events.publish(LabelsRecorded([labelled.event for labelled in stored]))
        return stored

    def _record(
        self,
        labels: Sequence[LabelInput],
        *,
        channel: Source,
        tenant: str | None,
        role: ActorRole,
        numbered: bool,
        on_stored: StoreHook | None = None,
    ) -> list[Labelled]:
        if not labels:
            raise InvalidInput("no labels given")
        with unit_of_work(self._engine) as session:
            events = []
            for actor in sorted({item.actor for item in labels}):
                _remember_actor(session, actor, role)
            for index, item in enumerate(labels):
                where = f"labels[{index}]: " if numbered else ""
                try:
                    review = _own_review(session, item.review_id, tenant)
                    prediction = _answered_prediction(session, item.review_id, item.prediction_id)
                except NotFound as error:
                    raise NotFound(where + error.message) from None
                confirms = prediction is not None and prediction.label == int(item.label)
                events.append(
                    LabelEvent(
                        review_id=item.review_id,
                        text_hash=review.text_hash,
                        label=int(item.label),
                        actor=item.actor,
                        channel=channel,
                        kind=LabelKind.CONFIRMATION if confirms else LabelKind.CORRECTION,
                        prediction_id=prediction.id if prediction is not None else None,
                    )
                )
            session.add_all(events)
            session.flush()
            fates = fates_of_texts(session, {e.text_hash for e in events}, self._rules.quorum)
            upto = trained_upto(session, tenant)
            labelled = [
                Labelled(event, fates[saved_id(event)], saved_id(event) <= upto) for event in events
            ]
            if on_stored is not None:
                on_stored(session, labelled)
            return labelled

    def fates(self, review_id: int) -> dict[int, Labelled]:
        """What became of each label of a review (revoked labels have none), by event id."""
        with Session(self._engine) as session:
            review = session.get(Review, review_id)
            if review is None:
                raise NotFound(f"review {review_id} does not exist")
            return self._fates_of(session, review)

    async def review(self, review_id: int, *, tenant: str | None = None) -> LabelledReview:
        """One review (NotFound outside ``tenant``) with its labels and their fates, read in
        one session."""
        return await run_store_work(self._engine, partial(self._review, review_id, tenant))

    def _review(self, review_id: int, tenant: str | None) -> LabelledReview:
        with Session(self._engine) as session:
            record = reviews.get_in(session, review_id, tenant=tenant)
            history = reviews.history_in(session, review_id)
            fates = self._fates_of(session, record.review) if history else {}
        return LabelledReview(record, [(event, fates.get(saved_id(event))) for event in history])

    def _fates_of(self, session: Session, review: Review) -> dict[int, Labelled]:
        fates = fates_of_texts(session, {review.text_hash}, self._rules.quorum)
        events = session.exec(
            select(LabelEvent).where(
                col(LabelEvent.id).in_(list(fates)), LabelEvent.review_id == review.id
            )
        ).all()
        upto = trained_upto(session, review.tenant)
        return {saved_id(e): Labelled(e, fates[saved_id(e)], saved_id(e) <= upto) for e in events}

    async def revoke(
        self,
        label_event_id: int,
        *,
        actor: str | None = None,
        tenant: str | None = None,
        within: timedelta | None = None,
    ) -> LabelEvent:
        """Mark a human label as revoked. ``actor``/``tenant`` restrict who may; ``within``
        limits how long after the label it may be undone."""
        event = await run_store_work(
            self._engine, partial(self._revoke, label_event_id, actor, tenant, within)
        )
        self._events.publish(LabelRevoked(event))
        return event

    def _revoke(
        self,
        label_event_id: int,
        actor: str | None,
        tenant: str | None,
        within: timedelta | None,
    ) -> LabelEvent:
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
