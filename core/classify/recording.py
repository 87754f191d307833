"""Writing classified reviews: each review (an external id seen before reuses its review) and one
prediction for it, as two multi-row inserts inside the caller's transaction, however many
requests the batch came from.

Plain ``INSERT ... RETURNING`` of rows rather than ORM objects: building and flushing one ORM
object per row cost ~0.5 ms a review.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, cast

from sqlalchemy import Table, insert, inspect
from sqlalchemy.sql.dml import ReturningInsert
from sqlmodel import Session, col, select

from core.store.tables import ModelVersion, Prediction, Review, Source, utcnow
from core.store.texts import text_hash
from serving.base import Verdict


class Item(Protocol):
    @property
    def external_id(self) -> str | None: ...

    @property
    def merchant_id(self) -> str | None: ...


@dataclass(frozen=True)
class Entry:
    """One review to record, with the prediction made for it."""

    item: Item
    text: str
    source: Source
    tenant: str
    verdict: Verdict
    version: ModelVersion
    fallback: bool
    latency_ms: float
    tenant_view_id: int | None = None


def record(session: Session, entries: Sequence[Entry]) -> list[tuple[int, int]]:
    """(review id, prediction id) for each entry, in order."""
    reviews = _review_ids(session, entries)
    now = utcnow()
    predictions = _insert_returning_ids(
        session,
        _table(Prediction),
        [
            {
                "review_id": review_id,
                "model_version_id": entry.version.id,
                "backend": entry.version.backend,
                "model_id": entry.verdict.model_id,
                "label": int(entry.verdict.label),
                "confidence": entry.verdict.confidence,
                "latency_ms": entry.latency_ms,
                "fallback": entry.fallback,
                "tenant_view_id": entry.tenant_view_id,
                "created_at": now,
            }
            for entry, review_id in zip(entries, reviews, strict=True)
        ],
    )
    return list(zip(reviews, predictions, strict=True))


Key = tuple[Source, str, str]
"""(source, tenant, external id): what makes a review the same review."""


def _review_ids(session: Session, entries: Sequence[Entry]) -> list[int]:
    """The stored review for an external id seen before (in the store or earlier in
    ``entries``), else a new one."""
    known = _stored_reviews(session, [_key(entry) for entry in entries])
    now = utcnow()
    rows: list[dict[str, Any]] = []
    row_of: list[int | None] = []  # per entry, its row in `rows`; None: its review is stored
    first_row: dict[Key, int] = {}
    for entry in entries:
        key = _key(entry)
        if key is not None and key in known:
            row_of.append(None)
            continue
        if key is not None and key in first_row:
            row_of.append(first_row[key])
            continue
        if key is not None:
            first_row[key] = len(rows)
        row_of.append(len(rows))
        rows.append(
            {
                "text": entry.text,
                "text_hash": text_hash(entry.text),
                "source": entry.source,
                "tenant": entry.tenant,
                "merchant_id": entry.item.merchant_id,
                "external_id": entry.item.external_id,
                "created_at": now,
            }
        )
    new_ids = _insert_returning_ids(session, _table(Review), rows)
    return [
        new_ids[row] if row is not None else known[cast(Key, _key(entry))]
        for entry, row in zip(entries, row_of, strict=True)
    ]


def _key(entry: Entry) -> Key | None:
    external_id = entry.item.external_id
    return None if external_id is None else (entry.source, entry.tenant, external_id)


def _stored_reviews(session: Session, keys: Sequence[Key | None]) -> dict[Key, int]:
    wanted: dict[tuple[Source, str], set[str]] = {}
    for key in keys:
        if key is not None:
            wanted.setdefault(key[:2], set()).add(key[2])
    known: dict[Key, int] = {}
    for (source, tenant), external_ids in wanted.items():
        for external_id, review_id in session.exec(
            select(Review.external_id, Review.id).where(
                Review.source == source,
                Review.tenant == tenant,
                col(Review.external_id).in_(external_ids),
            )
        ):
            if external_id is not None and review_id is not None:
                known[(source, tenant, external_id)] = review_id
    return known


def _insert_returning_ids(session: Session, table: Table, rows: list[dict[str, Any]]) -> list[int]:
    if not rows:
        return []
    sqlite = session.get_bind().dialect.name == "sqlite"
    ids = list(session.scalars(_insert(table, in_order=not sqlite), rows))
    if None in ids:
        raise RuntimeError(f"the store gave no id for a new {table.name} row")
    # SQLite gives each new row the largest rowid so far + 1, in the order of the rows, so the
    # sorted ids are in row order. (Asked to keep the order itself, SQLAlchemy would insert one
    # row per statement on SQLite.)
    return sorted(cast(list[int], ids)) if sqlite else cast(list[int], ids)


@cache
def _insert(table: Table, *, in_order: bool) -> ReturningInsert[tuple[int]]:
    """Built once: a statement object made anew for each batch costs more than the batch's SQL."""
    return insert(table).returning(table.c.id, sort_by_parameter_order=in_order)


def _table(model: type[Review] | type[Prediction]) -> Table:
    table = inspect(model).local_table
    assert isinstance(table, Table)
    return table
