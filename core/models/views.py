"""Tenants' own views: which one answers a tenant's reviews, and the record of each decision."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from core.errors import NotFound
from core.store.db import unit_of_work
from core.store.tables import ModelStatus, TenantView

_ACTIVE = col(TenantView.status) == ModelStatus.ACTIVE


RECHECK_S = 1.0
"""How long the classification path trusts the views it knows before asking the store again."""


class TenantViews:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._active: tuple[tuple[Any, ...], dict[str, TenantView]] | None = None
        self._checked = -RECHECK_S

    def active(self) -> dict[str, TenantView]:
        """The active view of each tenant that has one: a newly served view answers within
        ``RECHECK_S``, and the views are read again only when one changed."""
        now = time.monotonic()
        if self._active is not None and now - self._checked < RECHECK_S:
            return self._active[1]
        self._checked = now
        with Session(self._engine) as session:
            stamp = tuple(
                session.exec(
                    select(func.max(TenantView.id), func.count(col(TenantView.id))).where(_ACTIVE)
                ).one()
            )
            if self._active is None or self._active[0] != stamp:
                views = session.exec(select(TenantView).where(_ACTIVE)).all()
                self._active = (stamp, {view.tenant: view for view in views})
        return self._active[1]

    def of(self, tenant: str) -> TenantView | None:
        """The view serving ``tenant`` now (read from the store)."""
        with Session(self._engine) as session:
            return session.exec(
                select(TenantView).where(_ACTIVE, TenantView.tenant == tenant)
            ).first()

    def find(self, tenant: str, snapshot: str) -> TenantView | None:
        """A view of ``tenant`` already trained on ``snapshot`` (whatever became of it)."""
        with Session(self._engine) as session:
            return session.exec(
                select(TenantView)
                .where(TenantView.tenant == tenant, TenantView.snapshot == snapshot)
                .order_by(col(TenantView.id).desc())
            ).first()

    def register(self, view: TenantView) -> TenantView:
        """Store a trained view as a candidate (not served until ``decide``)."""
        with unit_of_work(self._engine) as session:
            view.status = ModelStatus.CANDIDATE
            session.add(view)
            session.flush()
            session.refresh(view)
            return view

    def decide(
        self, view_id: int, *, serve: bool, metrics: dict[str, Any], note: str
    ) -> TenantView:
        """Record the judgement of a candidate view; served, it replaces the tenant's active
        one (kept as retired)."""
        with unit_of_work(self._engine) as session:
            view = session.get(TenantView, view_id, with_for_update=True)
            if view is None:
                raise NotFound(f"tenant view {view_id} does not exist")
            if serve:
                for current in session.exec(
                    select(TenantView).where(_ACTIVE, TenantView.tenant == view.tenant)
                ).all():
                    current.status = ModelStatus.RETIRED
                    session.add(current)
                session.flush()
            view.status = ModelStatus.ACTIVE if serve else ModelStatus.REJECTED
            view.metrics = metrics
            view.note = note
            session.add(view)
            session.flush()
            session.refresh(view)
        self._checked = -RECHECK_S  # this process serves its own decision at once
        return view
