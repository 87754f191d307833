"""Drift: each merchant's correction rate and the fallbacks' share, over a rolling window.

The worker measures them every ``ALERTS__CHECK_EVERY_S``. The figures are published as a
``DriftMeasured`` event (the metrics set their gauges from it); a rate above its threshold, over
at least the minimum number of labels or predictions, raises an alert: a ``DriftNotice`` for the
admins, stored in the same transaction as the raised alert, so it is told once. An alert whose
rate is no longer above is cleared, and a later rise is told again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, select
from sqlmodel import Session, col

from core.config import AlertSettings
from core.events import Events
from core.labels.overview import corrections_by_tenant
from core.store.db import StoreService, unit_of_work
from core.store.outbox import DriftNotice, notification
from core.store.tables import DriftAlert, Prediction, utcnow

FALLBACK_KEY = "fallback_rate"


@dataclass(frozen=True)
class Rate:
    kind: str
    """``correction_rate`` or ``fallback_rate``."""
    tenant: str | None
    hits: int
    """Corrections, or reviews a fallback answered."""
    count: int
    """Labels, or predictions."""

    @property
    def rate(self) -> float:
        return self.hits / self.count if self.count else 0.0

    @property
    def key(self) -> str:
        return FALLBACK_KEY if self.tenant is None else f"correction_rate:{self.tenant}"


@dataclass(frozen=True)
class DriftMeasured:
    """Published after each check, with every rate measured."""

    corrections: list[Rate]
    fallbacks: Rate


@dataclass(frozen=True)
class DriftReport:
    measured: DriftMeasured
    raised: list[DriftNotice]
    cleared: list[str]
    """Keys of the alerts whose rate is back under the threshold."""


class DriftWatch(StoreService):
    def __init__(self, engine: Engine, settings: AlertSettings, events: Events) -> None:
        super().__init__(engine)
        self._settings = settings
        self._events = events

    async def check(self) -> DriftReport:
        report = await self._run(_check, self._settings)
        self._events.publish(report.measured)
        return report


def _check(engine: Engine, settings: AlertSettings) -> DriftReport:
    since = utcnow() - timedelta(hours=settings.window_hours)
    with Session(engine) as session:
        measured = DriftMeasured(_corrections(session, since), _fallbacks(session, since))
    over = [
        rate
        for rate in measured.corrections
        if rate.count >= settings.min_labels and rate.rate > settings.correction_rate
    ]
    fallbacks = measured.fallbacks
    if fallbacks.count >= settings.min_predictions and fallbacks.rate > settings.fallback_rate:
        over.append(fallbacks)
    with unit_of_work(engine) as session:
        raised_before = set(session.scalars(select(col(DriftAlert.key)).with_for_update()))
        raised = []
        for rate in over:
            if rate.key in raised_before:
                continue
            threshold = settings.fallback_rate if rate.tenant is None else settings.correction_rate
            notice = DriftNotice(
                rate.kind,
                rate.tenant,
                round(rate.rate, 4),
                threshold,
                rate.count,
                settings.window_hours,
            )
            session.add(DriftAlert(key=rate.key, figures=asdict(notice)))
            session.add(notification(notice))
            raised.append(notice)
        cleared = sorted(raised_before - {rate.key for rate in over})
        if cleared:
            session.execute(delete(DriftAlert).where(col(DriftAlert.key).in_(cleared)))
    return DriftReport(measured, raised, cleared)


def _corrections(session: Session, since: datetime) -> list[Rate]:
    """Per merchant with labels: its reviews received in the window, and the share of their live
    human labels that correct the prediction they answer (as the operator page shows it)."""
    return [
        Rate("correction_rate", t.tenant, t.corrections, t.labels)
        for t in sorted(corrections_by_tenant(session, since), key=lambda t: t.tenant)
        if t.labels
    ]


def _fallbacks(session: Session, since: datetime) -> Rate:
    count, hits = session.execute(
        select(func.count(), func.count().filter(col(Prediction.fallback)))
        .select_from(Prediction)
        .where(col(Prediction.created_at) >= since)
    ).one()
    return Rate("fallback_rate", None, hits, count)
