"""What each model trains on: the shared model, and each labelling tenant's own view.

The rules, text by text, are ``core.labels.rules``; this module reads every label in the store
once and applies them:

1. Per principal (a tenant, or the admins), the latest live label of a text counts; earlier
   ones are superseded.
2. Trust: the share of a tenant's labels that agree with evidence independent of it and of any
   model (an admin, the dataset label — the holdout's included, which makes its texts gold
   checks — or every other tenant that labelled the text), smoothed towards 0.5. A tenant with
   at least ``min_evidence`` such labels and a trust under ``flag_below`` is flagged.
3. The shared model learns the train split, with admins' labels over it and the labels that
   ``quorum`` unflagged tenants agree on where the dataset says nothing.
4. Each tenant's own view learns the shared set with that tenant's labels over it, plus, when
   ``implicit_confirmations`` is on, the verdicts it was shown before its latest label and left
   alone (a correction-only stream is nearly all one class; counting what the labeller saw and
   accepted keeps the classes as they come).
5. Texts of the frozen holdout never enter any training set.

Past 300 lines: one pass over the store applies all five, and splitting the pass would spread
one set of rules over several modules.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, exists, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from core.config import RetrainSettings
from core.labels.rules import ADMINS, FateStatus, Vote, judge, reference
from core.store.db import StoreService, unit_of_work
from core.store.tables import (
    Actor,
    ActorRole,
    LabelConflict,
    LabelEvent,
    LabelKind,
    Labeller,
    Prediction,
    Review,
    Split,
    as_utc,
    utcnow,
)
from serving.base import Label

PRIOR_TRUST, PRIOR_WEIGHT = 0.5, 4.0
_LIVE_HUMAN = (col(LabelEvent.kind) != LabelKind.IMPORT, col(LabelEvent.revoked_at).is_(None))


@dataclass
class TenantExamples:
    """What a tenant's own view learns on top of the shared set."""

    texts: list[str] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    explicit: int = 0
    """The tenant's own labels among them."""
    implicit: int = 0
    """Verdicts it was shown and left alone."""
    last_event_id: int = 0

    @property
    def content_hash(self) -> str:
        return _hash(zip(self.texts, self.labels, strict=True))


@dataclass
class Resolution:
    texts: list[str]
    labels: list[Label]
    human: int
    """Shared examples whose label comes from people, not from the dataset."""
    excluded_holdout: int
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    views: dict[str, TenantExamples] = field(default_factory=dict)
    labellers: dict[str, Labeller] = field(default_factory=dict)
    fates: Counter[str] = field(default_factory=Counter)
    """Each principal's latest label of each text, by fate status."""
    superseded: int = 0
    """Labels replaced by a later one of the same principal on the same text."""
    last_label_event_id: int = 0

    @property
    def content_hash(self) -> str:
        return _hash(zip(self.texts, self.labels, strict=True))

    @property
    def flagged(self) -> list[str]:
        return sorted(t for t, figures in self.labellers.items() if figures.flagged)


@dataclass(frozen=True)
class _Human:
    event_id: int
    text_hash: str
    text: str
    principal: str
    label: Label
    created_at: datetime


def training_set(engine: Engine, rules: RetrainSettings | None = None) -> Resolution:
    """Resolve every label in the store into the shared training set and the tenants' views."""
    rules = rules or RetrainSettings()
    train, holdout, dataset_texts = _dataset(engine)
    humans = _humans(engine)
    votes, texts, superseded = _latest_votes(humans)
    labellers = _trust(votes, train | holdout, rules)
    flagged = {t for t, figures in labellers.items() if figures.flagged}
    trust = {t: figures.trust for t, figures in labellers.items()}

    shared_human: dict[str, Label] = {}
    conflicts: dict[str, dict[str, Any]] = {}
    fates: Counter[str] = Counter()
    own: dict[str, dict[str, Label]] = defaultdict(dict)
    for key, text_votes in votes.items():
        judgement = judge(
            text_votes,
            dataset=train.get(key),
            holdout=key in holdout,
            flagged=flagged,
            trust=trust,
            quorum=rules.quorum,
        )
        if judgement.shared is not None:
            shared_human[key] = judgement.shared
        if judgement.conflict:
            conflicts[key] = _conflict(texts[key], text_votes, train.get(key))
        for vote in text_votes:
            fate = judgement.fates[vote.event_id]
            fates[fate.status] += 1
            if vote.admin:
                continue
            figures = labellers[vote.principal]
            figures.labels += 1
            if fate.status == FateStatus.ACCEPTED:
                figures.accepted += 1
            elif fate.status == FateStatus.PENDING:
                figures.pending += 1
            else:
                figures.held_back += 1
            if fate.own_view:
                own[vote.principal][key] = vote.label

    shared = train | shared_human
    keys = sorted(shared)
    views = _views(engine, own, humans, shared, holdout, texts, rules)
    _save_findings(engine, labellers, conflicts)
    return Resolution(
        texts=[texts.get(k) or dataset_texts[k] for k in keys],
        labels=[shared[k] for k in keys],
        human=len(shared_human),
        excluded_holdout=len(holdout),
        conflicts=list(conflicts.values()),
        views=views,
        labellers=labellers,
        fates=fates,
        superseded=superseded,
        last_label_event_id=max((h.event_id for h in humans), default=0),
    )


def _dataset(engine: Engine) -> tuple[dict[str, Label], dict[str, Label], dict[str, str]]:
    """The train split's labels, the holdout's labels (by text hash), and the dataset texts."""
    query = (
        select(
            col(LabelEvent.text_hash),
            col(Review.text),
            col(LabelEvent.label),
            col(LabelEvent.split),
        )
        .join(Review, col(Review.id) == LabelEvent.review_id)
        .where(col(LabelEvent.kind) == LabelKind.IMPORT, col(LabelEvent.revoked_at).is_(None))
        .order_by(col(LabelEvent.id))
    )
    train: dict[str, Label] = {}
    holdout: dict[str, Label] = {}
    texts: dict[str, str] = {}
    with engine.connect() as connection:
        for key, text, label, part in connection.execute(query):
            into = holdout if part == Split.TEST else train
            if key not in into:
                into[key] = Label(label)
                texts.setdefault(key, text)
    for key in holdout:
        train.pop(key, None)
    return train, holdout, texts


def _humans(engine: Engine) -> list[_Human]:
    """Every live human label, oldest first, with who gave it as a principal."""
    query = (
        select(
            col(LabelEvent.id),
            col(LabelEvent.text_hash),
            col(Review.text),
            col(Review.tenant),
            col(LabelEvent.actor),
            col(LabelEvent.label),
            col(LabelEvent.created_at),
        )
        .join(Review, col(Review.id) == LabelEvent.review_id)
        .where(*_LIVE_HUMAN)
        .order_by(col(LabelEvent.id))
    )
    with engine.connect() as connection:
        admins = set(
            connection.execute(
                select(col(Actor.name)).where(col(Actor.role) == ActorRole.ADMIN)
            ).scalars()
        )
        rows = connection.execution_options(yield_per=50_000).execute(query)
        return [
            _Human(
                event_id or 0,
                key,
                text,
                ADMINS if actor in admins else tenant,
                Label(label),
                as_utc(created_at),
            )
            for event_id, key, text, tenant, actor, label, created_at in rows
        ]


def _latest_votes(
    humans: list[_Human],
) -> tuple[dict[str, list[Vote]], dict[str, str], int]:
    """Per text hash, each principal's latest vote; the texts; how many votes were superseded."""
    votes: dict[str, list[Vote]] = {}
    texts: dict[str, str] = {}
    superseded = 0
    for h in humans:
        vote = Vote(h.event_id, h.principal, h.label)
        text_votes = votes.get(h.text_hash)
        if text_votes is None:
            votes[h.text_hash] = [vote]
            texts[h.text_hash] = h.text
            continue
        for i, earlier in enumerate(text_votes):
            if earlier.principal == h.principal:
                text_votes[i] = vote
                superseded += 1
                break
        else:
            text_votes.append(vote)
    return votes, texts, superseded


def _trust(
    votes: dict[str, list[Vote]], dataset: dict[str, Label], rules: RetrainSettings
) -> dict[str, Labeller]:
    figures: dict[str, Labeller] = {}
    for key, text_votes in votes.items():
        for vote in text_votes:
            if vote.admin:
                continue
            mine = figures.get(vote.principal)
            if mine is None:
                mine = figures[vote.principal] = Labeller(tenant=vote.principal)
            evidence = reference(vote.principal, text_votes, dataset.get(key))
            if evidence is not None:
                mine.checked += 1
                mine.agreed += vote.label == evidence
    for mine in figures.values():
        mine.trust = (mine.agreed + PRIOR_TRUST * PRIOR_WEIGHT) / (mine.checked + PRIOR_WEIGHT)
        mine.flagged = mine.checked >= rules.min_evidence and mine.trust < rules.flag_below
    return figures


def _views(
    engine: Engine,
    own: dict[str, dict[str, Label]],
    humans: list[_Human],
    shared: dict[str, Label],
    holdout: dict[str, Label],
    texts: dict[str, str],
    rules: RetrainSettings,
) -> dict[str, TenantExamples]:
    """Each labelling tenant's examples: its own labels, then the verdicts it left alone."""
    last_event: dict[str, int] = {}
    last_label_at: dict[str, datetime] = {}
    for h in humans:
        if h.principal != ADMINS:
            last_event[h.principal] = h.event_id
            last_label_at[h.principal] = h.created_at
    implicit: dict[str, dict[str, tuple[str, Label]]] = defaultdict(dict)
    if rules.implicit_confirmations and last_label_at:
        for tenant, key, text, label in _left_alone(engine, last_label_at):
            if key not in holdout and key not in shared and key not in own[tenant]:
                implicit[tenant][key] = (text, label)
    views: dict[str, TenantExamples] = {}
    for tenant in sorted(set(own) | set(implicit)):
        view = TenantExamples(last_event_id=last_event.get(tenant, 0))
        for key in sorted(own[tenant]):
            view.texts.append(texts[key])
            view.labels.append(own[tenant][key])
        view.explicit = len(view.texts)
        for key in sorted(implicit[tenant]):
            text, label = implicit[tenant][key]
            view.texts.append(text)
            view.labels.append(label)
        view.implicit = len(view.texts) - view.explicit
        views[tenant] = view
    return views


def _left_alone(
    engine: Engine, last_label_at: dict[str, datetime]
) -> Iterable[tuple[str, str, str, Label]]:
    """(tenant, text hash, text, label) of the latest verdict on each review of a labelling
    tenant that nobody labelled, made before that tenant's latest label."""
    labelled = exists().where(col(LabelEvent.review_id) == Review.id, *_LIVE_HUMAN)
    query = (
        select(
            col(Review.id),
            col(Review.tenant),
            col(Review.text_hash),
            col(Review.text),
            col(Prediction.label),
            col(Prediction.created_at),
        )
        .join(Prediction, col(Prediction.review_id) == Review.id)
        .where(col(Review.tenant).in_(sorted(last_label_at)), ~labelled)
        .order_by(col(Prediction.id))
    )
    latest: dict[int, tuple[str, str, str, Label]] = {}
    with engine.connect() as connection:
        for review_id, tenant, key, text, label, made_at in connection.execution_options(
            yield_per=50_000
        ).execute(query):
            if as_utc(made_at) <= last_label_at[tenant]:
                latest[review_id or 0] = (tenant, key, text, Label(label))
    return latest.values()


def _conflict(text: str, votes: list[Vote], dataset: Label | None) -> dict[str, Any]:
    return {
        "text": text,
        "votes": {v.principal: v.label.api_name for v in votes},
        "kept": dataset.api_name if dataset is not None else None,
        "key": hashlib.sha256(text.encode()).hexdigest()[:16],
    }


def _save_findings(
    engine: Engine, labellers: dict[str, Labeller], conflicts: dict[str, dict[str, Any]]
) -> None:
    """Store the labellers' figures and the conflicts, in one transaction, for readers that must
    not resolve every label themselves (the operator page)."""
    now = utcnow()
    with unit_of_work(engine) as session:
        _save_labellers(session, labellers, now)
        session.execute(delete(LabelConflict))
        rows = [
            {
                "text_hash": key,
                "text": conflict["text"],
                "votes": conflict["votes"],
                "voices": len(conflict["votes"]),
                "found_at": now,
            }
            for key, conflict in conflicts.items()
        ]
        for start in range(0, len(rows), 1000):
            session.execute(insert(LabelConflict), rows[start : start + 1000])


def _save_labellers(session: Session, labellers: dict[str, Labeller], now: datetime) -> None:
    if not labellers:
        return
    rows = [
        figures.model_dump() | {"trust": round(figures.trust, 4), "updated_at": now}
        for figures in labellers.values()
    ]
    dialect = session.get_bind().dialect.name
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for start in range(0, len(rows), 1000):
        statement = upsert(Labeller).values(rows[start : start + 1000])
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["tenant"],
                set_={name: statement.excluded[name] for name in rows[0] if name != "tenant"},
            )
        )


def _hash(examples: Iterable[tuple[str, Label]]) -> str:
    digest = hashlib.sha256()
    for text, label in examples:
        digest.update(json.dumps([text, int(label)], ensure_ascii=False).encode())
    return digest.hexdigest()


class Resolver(StoreService):
    """Label resolution for the loop and the operator: every label in the store, resolved."""

    def __init__(self, engine: Engine, rules: RetrainSettings) -> None:
        super().__init__(engine)
        self._rules = rules

    async def resolve(self) -> Resolution:
        """``training_set`` under the settings' rules, in a worker thread (it reads every
        label in the store)."""
        return await asyncio.to_thread(training_set, self._engine, self._rules)
