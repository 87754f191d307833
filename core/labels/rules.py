"""What a human label is worth: text by text, the label the shared model learns, and what
becomes of each label (its fate).

Who labels is a *principal*: the tenant that owns the reviews (an API client with all the
``actor`` names it posts under, or one Telegram merchant), or the admins as one authority.
A tenant can label only its own reviews, so one principal is one independent voice.

- Every label of a tenant teaches that tenant's own view (``own_view``), whatever anyone else
  says: one honest labeller is enough to improve what it is served.
- A label joins the shared model only when evidence independent of the labeller backs it: an
  admin, the dataset, or ``quorum`` tenants agreeing with no unflagged tenant against them.
  A liar therefore changes only its own view.
- Texts of the frozen holdout teach nobody.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from serving.base import Label

ADMINS = "admin"
"""The principal every admin label is given under: admins speak as one authority."""


class FateStatus(StrEnum):
    ACCEPTED = "accepted"
    """It joins the shared model."""
    PENDING = "pending"
    """It teaches the labeller's own view and waits for corroboration to join the shared model."""
    HELD_BACK = "held_back"
    """It does not join the shared model (it may still teach the labeller's own view)."""


_REASONS = {
    "admin": "an admin's label: joins the shared model",
    "admin_agrees": "an admin gave the same label: joins the shared model",
    "dataset_agrees": "agrees with the dataset label: joins the shared model",
    "corroborated": "{n} tenants gave the same label: joins the shared model",
    "awaiting_corroboration": (
        "teaches your own model now; joins the shared model once another tenant "
        "or an admin gives the same label"
    ),
    "contradicts_admin": "an admin labelled this review otherwise: teaches your own model only",
    "contradicts_dataset": "the dataset labels this review otherwise: teaches your own model only",
    "conflict": "tenants disagree on this review (reported as a conflict): teaches your own "
    "model only",
    "flagged": "your labels often disagree with independent evidence (trust {trust:.2f}): "
    "they teach your own model only",
    "holdout": "a review of the frozen holdout: no model ever trains on it",
    "superseded": "replaced by a later label of yours on the same review",
}


@dataclass(frozen=True)
class Fate:
    status: FateStatus
    code: str
    """One of a fixed set (see ``_REASONS``), for front doors that word it themselves."""
    own_view: bool
    """Whether it teaches the labeller's own view."""
    n: int = 0
    trust: float = 0.0

    @property
    def reason(self) -> str:
        return _REASONS[self.code].format(n=self.n, trust=self.trust)


FATE_CODES = tuple(_REASONS)
SUPERSEDED = Fate(FateStatus.HELD_BACK, "superseded", own_view=False)


@dataclass(frozen=True)
class Vote:
    """A principal's latest live label of one text."""

    event_id: int
    principal: str
    label: Label

    @property
    def admin(self) -> bool:
        return self.principal == ADMINS


@dataclass(frozen=True)
class Judgement:
    shared: Label | None
    """What the shared model learns from people for this text (None: nothing from people)."""
    fates: dict[int, Fate]
    """By label event id."""
    conflict: bool = False


def judge(
    votes: Sequence[Vote],
    *,
    dataset: Label | None,
    holdout: bool,
    flagged: Collection[str] = (),
    trust: dict[str, float] | None = None,
    quorum: int = 2,
) -> Judgement:
    """The shared label of one text and the fate of each vote (one vote per principal)."""
    if holdout:
        fate = Fate(FateStatus.HELD_BACK, "holdout", own_view=False)
        return Judgement(None, {v.event_id: fate for v in votes})
    admin = next((v.label for v in votes if v.admin), None)
    if admin is not None:
        return Judgement(admin, {v.event_id: _against(v, admin, "admin") for v in votes})
    if dataset is not None:
        return Judgement(None, {v.event_id: _against(v, dataset, "dataset") for v in votes})

    counted = Counter(v.label for v in votes if v.principal not in flagged)
    trust = trust or {}

    def unheard(vote: Vote) -> Fate:
        if vote.principal in flagged:
            return Fate(FateStatus.HELD_BACK, "flagged", True, trust=trust.get(vote.principal, 0.0))
        return Fate(FateStatus.PENDING, "awaiting_corroboration", True)

    if len(counted) > 1:
        fate = Fate(FateStatus.HELD_BACK, "conflict", own_view=True)
        return Judgement(None, {v.event_id: fate for v in votes}, conflict=True)
    if counted:
        ((label, n),) = counted.items()
        if n >= quorum:
            fates = {
                v.event_id: Fate(FateStatus.ACCEPTED, "corroborated", True, n=n)
                if v.label == label and v.principal not in flagged
                else unheard(v)
                for v in votes
            }
            return Judgement(label, fates)
    return Judgement(None, {v.event_id: unheard(v) for v in votes})


def _against(vote: Vote, reference: Label, source: str) -> Fate:
    if vote.admin:
        return Fate(FateStatus.ACCEPTED, "admin", own_view=True)
    if vote.label == reference:
        return Fate(FateStatus.ACCEPTED, f"{source}_agrees", own_view=True)
    return Fate(FateStatus.HELD_BACK, f"contradicts_{source}", own_view=True)


def reference(
    principal: str, votes: Sequence[Vote], dataset: Label | None, flagged: Collection[str] = ()
) -> Label | None:
    """Evidence about a text that does not come from ``principal`` nor from any model: an
    admin's label, the dataset label, else the label every other unflagged tenant gave."""
    admin = next((v.label for v in votes if v.admin and v.principal != principal), None)
    if admin is not None:
        return admin
    if dataset is not None:
        return dataset
    others = {
        v.label
        for v in votes
        if v.principal not in (principal, ADMINS) and v.principal not in flagged
    }
    return others.pop() if len(others) == 1 else None
