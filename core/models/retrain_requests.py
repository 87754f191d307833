"""Retrain requests: someone asks for a retrain; the learning loop's scheduler will consume them.

Pending requests coalesce: asking again while one is pending returns that one, also when the
askers are in different processes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy import Engine, false, text, update
from sqlmodel import Session, col, func, select

from core.errors import NotFound
from core.store.db import unit_of_work
from core.store.outbox import Notifications, RetrainRequested
from core.store.tables import LabelEvent, LabelKind, RetrainRequest, saved_id, utcnow

RECORDING_LOCK_KEY = 0x77616972  # "wair"


@dataclass(frozen=True)
class RetrainTicket:
    request: RetrainRequest
    new: bool
    """False when a pending request already existed and this one was folded into it."""


class RetrainRequests:
    def __init__(self, engine: Engine, notifications: Notifications) -> None:
        self._engine = engine
        self._notifications = notifications

    async def request(
        self, *, requested_by: str, reason: str = "", backend: str | None = None
    ) -> RetrainTicket:
        """Record a retrain request (or return the pending one) and publish it."""
        ticket = await asyncio.to_thread(self._record, requested_by, reason, backend)
        if ticket.new:
            await self._notifications.publish(
                RetrainRequested(saved_id(ticket.request), requested_by, reason)
            )
        return ticket

    def _record(self, requested_by: str, reason: str, backend: str | None) -> RetrainTicket:
        with unit_of_work(self._engine) as session:
            _one_recorder_at_a_time(session)
            pending = _first_pending(session)
            if pending is not None:
                return RetrainTicket(pending, new=False)
            request = RetrainRequest(requested_by=requested_by, reason=reason, backend=backend)
            session.add(request)
            session.flush()
            return RetrainTicket(request, new=True)

    def start(self, requested_by: str, reason: str) -> RetrainRequest:
        """Record a request the learning loop runs at once (a cron or label-count retrain)."""
        with unit_of_work(self._engine) as session:
            request = RetrainRequest(requested_by=requested_by, reason=reason)
            session.add(request)
            session.flush()
            return request

    def next_pending(self) -> RetrainRequest | None:
        with Session(self._engine) as session:
            return _first_pending(session)

    def finish(self, request_id: int, outcome: str) -> None:
        """Mark a request handled, with what came of it."""
        with unit_of_work(self._engine) as session:
            request = session.get(RetrainRequest, request_id, with_for_update=True)
            if request is None:
                raise NotFound(f"retrain request {request_id} does not exist")
            request.handled_at = utcnow()
            request.outcome = outcome
            session.add(request)

    def labels_since_last_run(self) -> int:
        """Live human labels given since the last retrain started (all of them before any)."""
        with Session(self._engine) as session:
            last = session.exec(
                select(func.max(RetrainRequest.created_at)).where(
                    col(RetrainRequest.handled_at).is_not(None)
                )
            ).one()
            query = select(func.count(col(LabelEvent.id))).where(
                col(LabelEvent.kind) != LabelKind.IMPORT, col(LabelEvent.revoked_at).is_(None)
            )
            if last is not None:
                query = query.where(col(LabelEvent.created_at) > last)
            return session.exec(query).one()


def _first_pending(session: Session) -> RetrainRequest | None:
    return session.exec(
        select(RetrainRequest)
        .where(col(RetrainRequest.handled_at).is_(None))
        .order_by(col(RetrainRequest.id))
    ).first()


def _one_recorder_at_a_time(session: Session) -> None:
    """Hold until the transaction ends a lock that every recorder takes first, so that two
    cannot both find no pending request and both add one: a PostgreSQL advisory lock, or
    SQLite's write lock (taken by a write that changes nothing)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": RECORDING_LOCK_KEY})
    else:
        session.execute(update(RetrainRequest).where(false()).values(reason=""))
