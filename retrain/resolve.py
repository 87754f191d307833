"""Which labels a model is trained on: the train split, overridden by accepted human labels."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from core.labels import normalize_text
from core.tables import LabelEvent, LabelKind, Review, Split
from serving.base import Label


@dataclass(frozen=True)
class TrainingSet:
    texts: list[str]
    labels: list[Label]
    human: int
    """How many examples carry a human label rather than the dataset's."""
    excluded_holdout: int
    """Texts left out because the frozen holdout contains them."""

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels, strict=True):
            digest.update(json.dumps([text, int(label)], ensure_ascii=False).encode())
        return digest.hexdigest()


def training_set(engine: Engine) -> TrainingSet:
    """One example per normalized text: the dataset's train label, or the latest human label.

    A human label counts unless revoked; texts of the frozen holdout are never included.
    """
    with Session(engine) as session:
        rows = session.exec(
            select(Review.text, LabelEvent.label, LabelEvent.kind, LabelEvent.split)
            .join(LabelEvent, col(LabelEvent.review_id) == Review.id)
            .where(col(LabelEvent.revoked_at).is_(None))
            .order_by(col(LabelEvent.created_at), col(LabelEvent.id))
        ).all()
    holdout = {
        normalize_text(t)
        for t, _, kind, part in rows
        if kind == LabelKind.IMPORT and part == Split.TEST
    }
    dataset: dict[str, tuple[str, Label]] = {}
    human: dict[str, tuple[str, Label]] = {}
    excluded = set()
    for text, label, kind, part in rows:
        key = normalize_text(text)
        if key in holdout:
            if part != Split.TEST:
                excluded.add(key)
            continue
        if kind == LabelKind.IMPORT:
            dataset.setdefault(key, (text, Label(label)))
        else:
            human[key] = (text, Label(label))
    merged = dataset | human
    keys = sorted(merged)
    return TrainingSet(
        texts=[merged[k][0] for k in keys],
        labels=[merged[k][1] for k in keys],
        human=len(human),
        excluded_holdout=len(excluded),
    )
