"""Which labels a model trains on: the train split, overridden by human labels that pass the rules.

The rules, in order:
1. Per actor, the latest live (not revoked) label of a text counts; earlier ones are history.
2. Caps: an actor's labels beyond ``daily_cap`` in one UTC day are held back, and so are all of
   an actor's corrections in a day where they exceed ``burst_limit`` (a burst of flips).
3. Trust: the share of an actor's labels that agree with a reference that does not depend on
   trust — the dataset label, else what two or more other actors agree on, else the prediction
   the label answered (the holdout-validated model) — smoothed towards 0.5 for newcomers.
4. Quorum: a text's human label is accepted when a trusted actor (an admin, or trust ≥
   ``trusted_at``) gives it, or when ``quorum`` actors agree and nobody trusted disagrees.
   Trusted actors who disagree, or two sides that both reach quorum, make a conflict: it is
   reported and the text keeps its dataset label (or stays out).
5. Texts of the frozen holdout never enter training, whatever anyone says.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from sqlalchemy import Engine
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from core.config import RetrainSettings
from core.db import unit_of_work
from core.labels import normalize_text
from core.tables import Actor, ActorRole, LabelEvent, LabelKind, Prediction, Review, Split, utcnow
from serving.base import Label

PRIOR_TRUST, PRIOR_WEIGHT = 0.5, 4.0


@dataclass(frozen=True)
class Policy:
    quorum: int = 2
    trusted_at: float = 0.8
    daily_cap: int = 500
    burst_limit: int = 100

    @classmethod
    def from_settings(cls, rules: RetrainSettings) -> Policy:
        return cls(rules.quorum, rules.trusted_at, rules.daily_cap, rules.burst_limit)


@dataclass(frozen=True)
class HumanLabel:
    event_id: int
    text: str
    actor: str
    label: Label
    kind: str
    day: date
    predicted: Label | None


@dataclass
class Resolution:
    texts: list[str]
    labels: list[Label]
    human: int
    """Examples whose label comes from people (accepted), not from the dataset."""
    excluded_holdout: int
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    pending: int = 0
    """Texts with human labels that have not reached the quorum yet."""
    held_back: dict[str, int] = field(default_factory=dict)
    """Labels set aside by the caps, per actor."""
    trust: dict[str, float] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels, strict=True):
            digest.update(json.dumps([text, int(label)], ensure_ascii=False).encode())
        return digest.hexdigest()


def training_set(engine: Engine, policy: Policy | None = None) -> Resolution:
    """Resolve every label in the store into one training example per normalized text."""
    policy = policy or Policy()
    dataset, holdout, humans, roles = _load(engine)
    live, held_back = _apply_caps(humans, policy)
    latest = _latest_per_actor(live)
    trust, agreements = _trust(latest, dataset)
    trusted = {a for a, t in trust.items() if t >= policy.trusted_at} | {
        a for a, role in roles.items() if role == ActorRole.ADMIN
    }

    accepted: dict[str, tuple[str, Label]] = {}
    conflicts: list[dict[str, Any]] = []
    pending = 0
    for key, votes in latest.items():
        if key in holdout:
            continue
        outcome = _decide(votes, trusted, policy.quorum)
        if outcome is None:
            pending += 1
        elif isinstance(outcome, Label):
            accepted[key] = (votes[0].text, outcome)
        else:
            conflicts.append(_conflict(key, votes, dataset.get(key)))

    merged = {k: v for k, v in dataset.items() if k not in holdout} | accepted
    keys = sorted(merged)
    _save_trust(engine, trust, agreements, latest)
    return Resolution(
        texts=[merged[k][0] for k in keys],
        labels=[merged[k][1] for k in keys],
        human=len(accepted),
        excluded_holdout=len(holdout & set(dataset)),
        conflicts=conflicts,
        pending=pending,
        held_back=held_back,
        trust=trust,
    )


def _load(
    engine: Engine,
) -> tuple[dict[str, tuple[str, Label]], set[str], list[HumanLabel], dict[str, ActorRole]]:
    answered = aliased(Prediction)
    with Session(engine) as session:
        imported = session.exec(
            select(Review.text, LabelEvent.label, LabelEvent.split)
            .join(LabelEvent, col(LabelEvent.review_id) == Review.id)
            .where(LabelEvent.kind == LabelKind.IMPORT, col(LabelEvent.revoked_at).is_(None))
            .order_by(col(LabelEvent.id))
        ).all()
        human_rows = session.exec(
            select(LabelEvent, Review.text, answered.label)
            .join(Review, col(Review.id) == LabelEvent.review_id)
            .outerjoin(answered, col(answered.id) == LabelEvent.prediction_id)
            .where(LabelEvent.kind != LabelKind.IMPORT, col(LabelEvent.revoked_at).is_(None))
            .order_by(col(LabelEvent.created_at), col(LabelEvent.id))
        ).all()
        roles = {a.name: a.role for a in session.exec(select(Actor)).all()}
    holdout = {normalize_text(t) for t, _, part in imported if part == Split.TEST}
    dataset: dict[str, tuple[str, Label]] = {}
    for text, label, part in imported:
        if part != Split.TEST:
            dataset.setdefault(normalize_text(text), (text, Label(label)))
    humans = [
        HumanLabel(
            event_id=event.id or 0,
            text=text,
            actor=event.actor,
            label=Label(event.label),
            kind=event.kind,
            day=event.created_at.date(),
            predicted=None if predicted is None else Label(predicted),
        )
        for event, text, predicted in human_rows
    ]
    return dataset, holdout, humans, roles


def _apply_caps(
    humans: list[HumanLabel], policy: Policy
) -> tuple[list[HumanLabel], dict[str, int]]:
    per_day: Counter[tuple[str, date]] = Counter()
    flips: Counter[tuple[str, date]] = Counter(
        (h.actor, h.day) for h in humans if h.kind == LabelKind.CORRECTION
    )
    kept, held_back = [], Counter[str]()
    for h in humans:
        per_day[(h.actor, h.day)] += 1
        over_cap = per_day[(h.actor, h.day)] > policy.daily_cap
        burst = h.kind == LabelKind.CORRECTION and flips[(h.actor, h.day)] > policy.burst_limit
        if over_cap or burst:
            held_back[h.actor] += 1
        else:
            kept.append(h)
    return kept, dict(held_back)


def _latest_per_actor(humans: list[HumanLabel]) -> dict[str, list[HumanLabel]]:
    """Per normalized text, each actor's latest label (``humans`` is oldest first)."""
    by_text: dict[str, dict[str, HumanLabel]] = defaultdict(dict)
    for h in humans:
        by_text[normalize_text(h.text)][h.actor] = h
    return {key: list(actors.values()) for key, actors in by_text.items()}


def _trust(
    latest: dict[str, list[HumanLabel]], dataset: dict[str, tuple[str, Label]]
) -> tuple[dict[str, float], dict[str, int]]:
    agree: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for key, votes in latest.items():
        for vote in votes:
            reference = _reference(vote, votes, dataset.get(key))
            if reference is None:
                continue
            total[vote.actor] += 1
            agree[vote.actor] += vote.label == reference
    trust = {
        actor: (agree[actor] + PRIOR_TRUST * PRIOR_WEIGHT) / (total[actor] + PRIOR_WEIGHT)
        for actor in {v.actor for votes in latest.values() for v in votes}
    }
    return trust, dict(agree)


def _reference(
    vote: HumanLabel, votes: list[HumanLabel], dataset: tuple[str, Label] | None
) -> Label | None:
    if dataset is not None:
        return dataset[1]
    others = Counter(v.label for v in votes if v.actor != vote.actor)
    if others:
        (label, count), *rest = others.most_common()
        if count >= 2 and (not rest or rest[0][1] < count):
            return label
    return vote.predicted


def _decide(
    votes: list[HumanLabel], trusted: set[str], quorum: int
) -> Label | Literal["conflict"] | None:
    """The accepted label, "conflict", or None when the quorum is not reached yet."""
    trusted_labels = {v.label for v in votes if v.actor in trusted}
    if len(trusted_labels) > 1:
        return "conflict"
    if trusted_labels:
        return trusted_labels.pop()
    counts = Counter(v.label for v in votes)
    reached = [label for label, n in counts.items() if n >= quorum]
    if len(reached) > 1:
        return "conflict"
    if reached and counts[reached[0]] > sum(counts.values()) - counts[reached[0]]:
        return reached[0]
    return None


def _conflict(
    key: str, votes: list[HumanLabel], dataset: tuple[str, Label] | None
) -> dict[str, Any]:
    return {
        "text": votes[0].text,
        "votes": {v.actor: v.label.api_name for v in votes},
        "kept": dataset[1].api_name if dataset is not None else None,
        "key": hashlib.sha256(key.encode()).hexdigest()[:16],
    }


def _save_trust(
    engine: Engine,
    trust: dict[str, float],
    agreements: dict[str, int],
    latest: dict[str, list[HumanLabel]],
) -> None:
    labels = Counter(v.actor for votes in latest.values() for v in votes)
    with unit_of_work(engine) as session:
        for actor in session.exec(select(Actor).where(col(Actor.name).in_(list(trust)))).all():
            actor.trust = round(trust[actor.name], 4)
            actor.labels = labels[actor.name]
            actor.agreements = agreements.get(actor.name, 0)
            actor.updated_at = utcnow()
            session.add(actor)
