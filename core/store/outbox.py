"""News for whoever listens (the bot tells its admins), across processes: the database carries it.

``publish`` stores the event in the ``notification`` table, from any process (the worker). A
process with subscribers polls the table (every ``poll_s``, and at once after a publish of its
own) and claims each new notification with a conditional UPDATE, so that of all the listening
processes (the polling bot, or every API replica in webhook mode) exactly one delivers it, to
all of its subscribers. A notification published while nobody listens is delivered when a
listener starts, unless it is older than ``max_age`` by then; after ``keep`` it is deleted.

At least once: a notification is marked delivered only after every subscriber returned. If one
raised, or the process died while delivering, it is claimed again (here or elsewhere) once the
claim is ``claim_timeout`` old, and the subscribers that had it hear it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, delete, or_, update
from sqlmodel import Session, col, select

from core.store.db import unit_of_work
from core.store.tables import Notification, saved_id, utcnow

log = logging.getLogger(__name__)

POLL_S = 2.0
CLAIM_TIMEOUT = timedelta(minutes=5)
"""Longer than the subscribers take (a Telegram send may wait out a 60 s flood limit)."""
MAX_AGE = timedelta(days=1)
KEEP = timedelta(days=30)
PRUNE_EVERY = timedelta(hours=1)
BATCH = 100


@dataclass(frozen=True)
class RetrainRequested:
    request_id: int
    requested_by: str
    reason: str


@dataclass(frozen=True)
class RetrainFinished:
    """Published by the learning loop once the gate has judged a candidate."""

    candidate_version_id: int | None
    promoted: bool
    reason: str
    """Why, in a sentence (e.g. the holdout accuracies compared)."""


@dataclass(frozen=True)
class BackendAlert:
    """A backend cannot answer until a person acts or a quota resets: a refused key or model,
    no balance, a used-up quota, a locked account. Published once per outage."""

    backend: str
    message: str


@dataclass(frozen=True)
class FineTuneNotice:
    """A cloud fine-tune needs an admin: ``refused`` (the provider refused it for good; only a
    retry by hand launches it again), ``failed`` (it failed while training), ``paused`` (a
    used-up quota or a locked account stops fine-tunes until a time), ``over_budget`` (the month's
    budget would be passed) or ``deploy`` (a full fine-tune answers only once deployed).
    Stored with the change it tells of, in the same transaction (see ``notification``)."""

    kind: str
    job_id: int | None
    reason: str


@dataclass(frozen=True)
class DriftNotice:
    """A rate rose above its alert threshold over the window: ``correction_rate`` (of the
    merchant ``tenant``) or ``fallback_rate``. Told once until it is back under."""

    kind: str
    tenant: str | None
    rate: float
    threshold: float
    count: int
    """The labels (or predictions) the rate is over."""
    window_hours: float


Event = RetrainRequested | RetrainFinished | BackendAlert | FineTuneNotice | DriftNotice
Subscriber = Callable[[Event], Awaitable[None]]
EVENTS: dict[str, type[Event]] = {
    kind.__name__: kind
    for kind in (RetrainRequested, RetrainFinished, BackendAlert, FineTuneNotice, DriftNotice)
}


def notification(event: Event) -> Notification:
    """The row that carries ``event``, for a unit of work that stores it with the change it
    tells of: both are committed, or neither (the listeners poll the table)."""
    return Notification(kind=type(event).__name__, payload=dataclasses.asdict(event))


class Notifications:
    def __init__(
        self,
        engine: Engine,
        *,
        poll_s: float = POLL_S,
        claim_timeout: timedelta = CLAIM_TIMEOUT,
        max_age: timedelta = MAX_AGE,
        keep: timedelta = KEEP,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self.poll_s = poll_s
        self.claim_timeout = claim_timeout
        self.max_age = max_age
        self.keep = keep
        self._clock = clock
        self._subscribers: list[Subscriber] = []
        self._poller: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pruned_at: datetime | None = None

    async def publish(self, event: Event) -> None:
        """Store ``event`` for the listeners of every process; it is committed when this returns."""
        await asyncio.to_thread(self._store, event)
        self._nudge()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber, called in the running event loop; returns the function that removes
        it again. The first subscriber starts polling, removing the last one stops it."""
        loop = asyncio.get_running_loop()
        self._subscribers.append(subscriber)
        if self._poller is None or self._poller.done():
            self._loop = loop
            self._wake = asyncio.Event()
            self._poller = loop.create_task(self._poll(), name="notifications")

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
            if not self._subscribers and self._poller is not None:
                self._poller.cancel()
                self._poller = None

        return unsubscribe

    async def deliver(self) -> int:
        """Claim what is due and deliver it to this process's subscribers; how many were
        delivered (and marked so)."""
        delivered = 0
        for notification in await asyncio.to_thread(self._due):
            if not self._subscribers:
                break
            if not await asyncio.to_thread(self._claim, saved_id(notification)):
                continue
            event = _event(notification)
            if event is None:
                await asyncio.to_thread(self._mark_delivered, saved_id(notification))
            elif await self._call_subscribers(event):
                await asyncio.to_thread(self._mark_delivered, saved_id(notification))
                delivered += 1
        return delivered

    async def _call_subscribers(self, event: Event) -> bool:
        subscribers = list(self._subscribers)
        results = await asyncio.gather(
            *(subscriber(event) for subscriber in subscribers), return_exceptions=True
        )
        failed = False
        for subscriber, result in zip(subscribers, results, strict=True):
            if isinstance(result, BaseException):
                failed = True
                log.error(
                    "subscriber %r failed on %s (delivered again later): %r",
                    subscriber,
                    type(event).__name__,
                    result,
                )
        return not failed

    async def _poll(self) -> None:
        while True:
            try:
                if self._pruned_at is None or self._clock() - self._pruned_at >= PRUNE_EVERY:
                    await asyncio.to_thread(self.prune)
                await self.deliver()
            except Exception:
                log.warning("could not deliver notifications; trying again", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()

    def _nudge(self) -> None:
        """Wake this process's poller, if it runs, to deliver what was just published."""
        loop = self._loop
        if loop is None or self._poller is None or loop.is_closed():
            return
        try:
            same_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    def _store(self, event: Event) -> None:
        payload: dict[str, Any] = dataclasses.asdict(event)
        with unit_of_work(self._engine) as session:
            session.add(
                Notification(kind=type(event).__name__, payload=payload, created_at=self._clock())
            )

    def _due(self) -> list[Notification]:
        now = self._clock()
        with Session(self._engine) as session:
            return list(
                session.exec(
                    select(Notification)
                    .where(
                        col(Notification.delivered_at).is_(None),
                        col(Notification.created_at) >= now - self.max_age,
                        _unclaimed(now - self.claim_timeout),
                    )
                    .order_by(col(Notification.id))
                    .limit(BATCH)
                ).all()
            )

    def _claim(self, notification_id: int) -> bool:
        now = self._clock()
        with unit_of_work(self._engine) as session:
            result = session.execute(
                update(Notification)
                .where(
                    col(Notification.id) == notification_id,
                    col(Notification.delivered_at).is_(None),
                    _unclaimed(now - self.claim_timeout),
                )
                .values(claimed_at=now)
            )
        return int(getattr(result, "rowcount", 0) or 0) == 1

    def _mark_delivered(self, notification_id: int) -> None:
        with unit_of_work(self._engine) as session:
            session.execute(
                update(Notification)
                .where(col(Notification.id) == notification_id)
                .values(delivered_at=self._clock())
            )

    def prune(self) -> int:
        """Delete notifications older than ``keep``, delivered or not; how many."""
        now = self._clock()
        with unit_of_work(self._engine) as session:
            result = session.execute(
                delete(Notification).where(col(Notification.created_at) < now - self.keep)
            )
        self._pruned_at = now
        return int(getattr(result, "rowcount", 0) or 0)


def _unclaimed(stale: datetime) -> ColumnElement[bool]:
    return or_(col(Notification.claimed_at).is_(None), col(Notification.claimed_at) < stale)


def _event(notification: Notification) -> Event | None:
    """The stored event, or None (logged) for one this version does not know."""
    kind = EVENTS.get(notification.kind)
    try:
        if kind is not None:
            return kind(**notification.payload)
    except TypeError:
        pass
    log.error(
        "notification %s: cannot read a %r with %r; dropped",
        notification.id,
        notification.kind,
        notification.payload,
    )
    return None
