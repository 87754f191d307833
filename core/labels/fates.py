"""What became of labels already stored: the rules of ``core.labels.rules`` applied to every
live label of some texts, with each tenant's trust as the last resolution measured it, and how
far the model answering a tenant has caught up with its labels."""

from __future__ import annotations

from sqlmodel import Session, col, select

from core.labels.rules import ADMINS, SUPERSEDED, Fate, Vote, judge
from core.store.tables import (
    Actor,
    ActorRole,
    LabelEvent,
    LabelKind,
    Labeller,
    ModelStatus,
    ModelVersion,
    Review,
    Snapshot,
    Split,
    TenantView,
    saved_id,
)
from serving.base import Label


def fates_of_texts(session: Session, text_hashes: set[str], quorum: int) -> dict[int, Fate]:
    """The fate of every live human label of these texts, by the rules the loop trains with
    (``core.label_rules``), with each tenant's trust as the last resolution measured it."""
    rows = session.exec(
        select(LabelEvent, Review.tenant, Actor.role)
        .join(Review, col(Review.id) == LabelEvent.review_id)
        .outerjoin(Actor, col(Actor.name) == LabelEvent.actor)
        .where(col(LabelEvent.text_hash).in_(sorted(text_hashes)))
        .where(col(LabelEvent.revoked_at).is_(None))
        .order_by(col(LabelEvent.id))
    ).all()
    dataset: dict[str, Label] = {}
    holdout: set[str] = set()
    votes: dict[str, dict[str, Vote]] = {}
    fates: dict[int, Fate] = {}
    for event, tenant, role in rows:
        if event.kind == LabelKind.IMPORT:
            if event.split == Split.TEST:
                holdout.add(event.text_hash)
            dataset.setdefault(event.text_hash, Label(event.label))
            continue
        principal = ADMINS if role == ActorRole.ADMIN else tenant
        earlier = votes.setdefault(event.text_hash, {}).get(principal)
        if earlier is not None:
            fates[earlier.event_id] = SUPERSEDED
        votes[event.text_hash][principal] = Vote(saved_id(event), principal, Label(event.label))
    principals = {p for by in votes.values() for p in by}
    labellers = session.exec(select(Labeller).where(col(Labeller.tenant).in_(principals))).all()
    flagged = {row.tenant for row in labellers if row.flagged}
    trust = {row.tenant: row.trust for row in labellers}
    for key, by_principal in votes.items():
        judgement = judge(
            list(by_principal.values()),
            dataset=None if key in holdout else dataset.get(key),
            holdout=key in holdout,
            flagged=flagged,
            trust=trust,
            quorum=quorum,
        )
        fates |= judgement.fates
    return fates


def trained_upto(session: Session, tenant: str | None) -> int:
    """The newest label the model answering ``tenant`` now (its own view, else the shared
    model) was trained with."""
    if tenant is not None:
        view = session.exec(
            select(TenantView.last_label_event_id).where(
                TenantView.tenant == tenant, TenantView.status == ModelStatus.ACTIVE
            )
        ).first()
        if view is not None:
            return view
    manifest = session.exec(
        select(Snapshot.manifest)
        .join(ModelVersion, col(ModelVersion.snapshot) == Snapshot.content_hash)
        .where(ModelVersion.status == ModelStatus.ACTIVE)
    ).first()
    return 0 if manifest is None else int(manifest.get("last_label_event_id", 0))
