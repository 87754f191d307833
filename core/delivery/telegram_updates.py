"""Telegram updates taken for processing, one row per ``update_id``: every update in webhook
mode, and in polling mode the ones waiting in a chat's line (``bot.throttle.StoredBacklog``).

Telegram retries a delivery it got no 2xx for, and behind a load balancer each retry may reach
another API replica. Each replica claims the update with an insert that stores its JSON; the
database's primary key lets exactly one insert win, on SQLite and PostgreSQL alike. The replica
marks the update handled when its handler is done, and keeps it alive meanwhile (``touch``).
An update neither handled nor kept alive for a while was taken by a replica that died:
``take_stalled`` takes it again with a conditional UPDATE, so that of several sweeping replicas
one handles it, and gives it up after ``max_attempts`` takes (an update that kills its handler
must not kill every replica in turn). Rows older than ``keep`` are pruned now and then by the
claims themselves (Telegram gives up on an update within a day).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine, delete, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, select

from core.store.db import run_store_work, unit_of_work
from core.store.tables import TelegramUpdate, utcnow

log = logging.getLogger(__name__)

KEEP = timedelta(days=7)
PRUNE_EVERY = 1000
"""A process prunes on its first claim and then on every this-many-th one."""
SWEEP_BATCH = 100


@dataclass(frozen=True)
class Stalled:
    """An update taken again by a sweep: handle it (its JSON as Telegram posted it)."""

    update_id: int
    payload: str


class TelegramUpdates:
    """The claims of one process. The async methods are the webhook's, called from the event
    loop (their store work runs where ``run_store_work`` puts it)."""

    def __init__(
        self,
        engine: Engine,
        *,
        keep: timedelta = KEEP,
        prune_every: int = PRUNE_EVERY,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._keep = keep
        self._prune_every = prune_every
        self._clock = clock
        self._claims = 0
        self._lock = threading.Lock()

    async def claim(self, update_id: int, payload: str) -> bool:
        """True if this call took the update, stored with ``payload`` (its JSON) and committed
        when this returns; False if it had been taken already, here or by another process on the
        same database."""
        return await run_store_work(self._engine, partial(self._claim, update_id, payload))

    def _claim(self, update_id: int, payload: str) -> bool:
        try:
            with unit_of_work(self._engine) as session:
                session.add(
                    TelegramUpdate(update_id=update_id, received_at=self._clock(), payload=payload)
                )
        except IntegrityError:
            return False
        with self._lock:
            due = self._claims % self._prune_every == 0
            self._claims += 1
        if due:
            try:
                self.prune()
            except SQLAlchemyError:
                log.warning("could not prune old Telegram updates", exc_info=True)
        return True

    def prune(self) -> int:
        """Forget updates received longer than ``keep`` ago; how many were forgotten."""
        cutoff = self._clock() - self._keep
        with unit_of_work(self._engine) as session:
            result = session.execute(
                delete(TelegramUpdate).where(col(TelegramUpdate.received_at) < cutoff)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def handled(self, update_id: int) -> None:
        """The update's handler is done (also when it failed): never take it again."""
        values = {"handled_at": self._clock()}
        await run_store_work(self._engine, partial(self._change, update_id, values))

    async def touch(self, update_id: int) -> None:
        """The update is still being handled: not stalled for another ``stall`` from now."""
        values = {"received_at": self._clock()}
        await run_store_work(self._engine, partial(self._change, update_id, values))

    async def take_stalled(self, stall: timedelta, max_attempts: int) -> list[Stalled]:
        """Take again each update that was neither handled nor touched for ``stall``: those
        that this call won (of several processes sweeping at once, one wins each). One already
        taken ``max_attempts`` times is given up instead: marked handled, and logged (one
        without a payload, taken by a version before migration 0010, silently)."""
        return await run_store_work(self._engine, partial(self._take_stalled, stall, max_attempts))

    def _take_stalled(self, stall: timedelta, max_attempts: int) -> list[Stalled]:
        now = self._clock()
        cutoff = now - stall
        with Session(self._engine) as session:
            rows = session.exec(
                select(TelegramUpdate.update_id, TelegramUpdate.attempts, TelegramUpdate.payload)
                .where(
                    col(TelegramUpdate.handled_at).is_(None),
                    col(TelegramUpdate.received_at) < cutoff,
                )
                .order_by(col(TelegramUpdate.received_at))
                .limit(SWEEP_BATCH)
            ).all()
        taken: list[Stalled] = []
        for update_id, attempts, payload in rows:
            seen = (attempts, cutoff)
            if payload is not None and attempts < max_attempts:
                again = {"received_at": now, "attempts": attempts + 1}
                if self._change(update_id, again, seen=seen):
                    taken.append(Stalled(update_id, payload))
            elif self._change(update_id, {"handled_at": now}, seen=seen) and payload is not None:
                log.error(
                    "Telegram update %s was taken %s times and never handled; given up: %s",
                    update_id,
                    attempts,
                    payload,
                )
        return taken

    def _change(
        self, update_id: int, values: dict[str, Any], *, seen: tuple[int, datetime] | None = None
    ) -> bool:
        """Set ``values`` on the update if it is not handled yet (and, given ``seen``, is still
        as a sweep saw it: taken that many times, and not touched since that moment); whether
        it was."""
        conditions = [
            col(TelegramUpdate.update_id) == update_id,
            col(TelegramUpdate.handled_at).is_(None),
        ]
        if seen is not None:
            attempts, stalled_before = seen
            conditions.append(col(TelegramUpdate.attempts) == attempts)
            conditions.append(col(TelegramUpdate.received_at) < stalled_before)
        with unit_of_work(self._engine) as session:
            result = session.execute(update(TelegramUpdate).where(*conditions).values(values))
        return int(getattr(result, "rowcount", 0) or 0) == 1
