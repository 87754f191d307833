"""The scheduler of the learning loop. Exactly one process leads; the others wait to take over.

Jobs (APScheduler 3, persistent SQLAlchemy job store in the product's database):
- ``retrain``: on the cron of RETRAIN__CRON in RETRAIN__TIMEZONE;
- ``check``: every RETRAIN__CHECK_EVERY_S (10 s), runs pending retrain requests (from the bot,
  the API or ``waimai retrain``), or one when RETRAIN__LABEL_THRESHOLD human labels arrived
  since the last run;
- ``poll-finetunes``: every minute, advances remote fine-tune jobs that are not finished;
- ``drift``: every ALERTS__CHECK_EVERY_S, measures each merchant's correction rate and the
  fallbacks' share, and tells the admins once of a rate above its threshold;
- ``stats-rollup``: every STATS__ROLLUP_EVERY_S, counts the earlier days into the stats' day
  tables, so that the stats answer in milliseconds over millions of reviews.

Leadership is a PostgreSQL advisory lock held on a dedicated connection, or a file lock beside
the SQLite file; both vanish with the process that held them, so another worker takes over.
A worker that cannot run the trainer of RETRAIN__BACKEND (``lora`` without torch, transformers
and peft: the default image) does not campaign, and leaves the loop to one that can (the
``trainer`` service of the compose file, on the GPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
from pathlib import Path
from typing import Protocol

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from filelock import FileLock, Timeout
from sqlalchemy import Connection, text

from core.store.outbox import RetrainFinished
from core.store.tables import ModelStatus, saved_id
from core.wiring import Core
from retrain.cycle import run_cycle
from retrain.trainers import zhipu

log = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 0x7761696D  # "waim"
MISFIRE_GRACE_S = 3600

_running: Core | None = None
"""The leader's core. Jobs are stored by reference, so they are module-level and find it here."""


def leads(core: Core) -> bool:
    """Whether this process's worker leads the loop now (with ``core``)."""
    return _running is core


def _core() -> Core:
    if _running is None:
        raise RuntimeError("the worker is not running in this process")
    return _running


async def retrain_job() -> None:
    """The cron retrain."""
    core = _core()
    request = await asyncio.to_thread(core.retrain_requests.start, "schedule", "cron")
    await _run(core, saved_id(request), backend=None)


async def check_job() -> None:
    """Run a pending request, or start one when enough new labels have arrived."""
    core = _core()
    request = await asyncio.to_thread(core.retrain_requests.next_pending)
    if request is None:
        arrived = await asyncio.to_thread(core.retrain_requests.labels_since_last_run)
        if arrived < core.settings.retrain.label_threshold:
            return
        request = await asyncio.to_thread(
            core.retrain_requests.start, "threshold", f"{arrived} new labels"
        )
    await _run(core, saved_id(request), backend=request.backend)


async def poll_finetunes_job() -> None:
    """Advance unfinished remote fine-tune jobs; a finished one goes through the gate."""
    core = _core()
    if core.settings.zhipu.api_key is None:
        return
    for job in await zhipu.poll(core):
        if job.model_version_id is None:
            continue
        version = await core.models.get(job.model_version_id)
        await core.notifications.publish(
            RetrainFinished(version.id, version.status == ModelStatus.ACTIVE, version.note)
        )


async def _run(core: Core, request_id: int, backend: str | None) -> None:
    try:
        result = await run_cycle(core, backend)
    except Exception as error:
        log.exception("retrain request %s failed", request_id)
        await asyncio.to_thread(core.retrain_requests.finish, request_id, f"failed: {error}")
        return
    await asyncio.to_thread(
        core.retrain_requests.finish, request_id, f"{result.outcome}: {result.detail}"
    )
    if result.decision is not None:
        await core.notifications.publish(
            RetrainFinished(
                result.version.id if result.version else None,
                result.outcome == "promoted",
                result.detail,
            )
        )


async def drift_job() -> None:
    """Measure the correction and fallback rates; raise (once) and clear the drift alerts."""
    report = await _core().drift.check()
    for notice in report.raised:
        log.warning("drift alert: %s", notice)


async def stats_job() -> None:
    """Count the earlier days again into the stats' day tables."""
    through = await _core().stats.refresh()
    log.info("stats rolled up through %s", through.date())


class LeaderLock(Protocol):
    def acquire(self) -> bool: ...
    def held(self) -> bool: ...
    def release(self) -> None: ...


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock on a connection kept for as long as it leads."""

    def __init__(self, core: Core) -> None:
        self._engine = core.engine
        self._connection: Connection | None = None

    def acquire(self) -> bool:
        connection = self._engine.connect()
        got = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
        if got.scalar():
            connection.commit()
            self._connection = connection
            return True
        connection.close()
        return False

    def held(self) -> bool:
        if self._connection is None:
            return False
        try:
            self._connection.execute(text("SELECT 1"))
            return True
        except Exception:
            log.warning("lost the connection that held the leader lock")
            self._connection = None
            return False

    def release(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.execute(
                    text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY}
                )
                self._connection.close()
            self._connection = None


class FileLeaderLock:
    """A lock file beside the SQLite database; the OS drops it when the process ends."""

    def __init__(self, core: Core) -> None:
        database = core.engine.url.database or "waimai.db"
        self._lock = FileLock(str(Path(database).with_suffix(".leader.lock")))

    def acquire(self) -> bool:
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def held(self) -> bool:
        return self._lock.is_locked

    def release(self) -> None:
        self._lock.release(force=True)


def leader_lock(core: Core) -> LeaderLock:
    if core.engine.dialect.name == "postgresql":
        return AdvisoryLock(core)
    return FileLeaderLock(core)


def build_scheduler(core: Core) -> AsyncIOScheduler:
    rules = core.settings.retrain
    scheduler = AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=core.engine)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_S},
        timezone=rules.timezone,
    )
    jobs = (
        (retrain_job, CronTrigger.from_crontab(rules.cron, timezone=rules.timezone), "retrain"),
        (check_job, IntervalTrigger(seconds=rules.check_every_s), "check"),
        (poll_finetunes_job, IntervalTrigger(minutes=1), "poll-finetunes"),
        (drift_job, IntervalTrigger(seconds=core.settings.alerts.check_every_s), "drift"),
        (stats_job, IntervalTrigger(seconds=core.settings.stats.rollup_every_s), "stats-rollup"),
    )
    for function, trigger, job_id in jobs:
        scheduler.add_job(function, trigger, id=job_id, replace_existing=True)
    return scheduler


async def run_worker(core: Core, stop: asyncio.Event) -> None:
    """Campaign for leadership until ``stop`` is set; lead (schedule the jobs) while elected."""
    global _running
    missing = missing_trainer(core.settings.retrain.backend)
    if missing:
        log.warning("%s: this worker stands by and leaves the loop to one that has it", missing)
        await stop.wait()
        return
    lock = leader_lock(core)
    retry = core.settings.retrain.leader_retry_s
    while not stop.is_set():
        if not lock.acquire():
            log.info("another worker leads; trying again in %g s", retry)
            await _wait(stop, retry)
            continue
        log.info("this worker leads the learning loop")
        _running = core
        scheduler = build_scheduler(core)
        scheduler.start()
        try:
            while not stop.is_set() and lock.held():
                await _wait(stop, retry)
        finally:
            scheduler.shutdown(wait=False)
            _running = None
            lock.release()
            log.info("this worker no longer leads the learning loop")


def missing_trainer(backend: str) -> str | None:
    """What this process lacks to train ``backend``, or None."""
    needed = ("torch", "transformers", "peft") if backend == "lora" else ()
    absent = [name for name in needed if importlib.util.find_spec(name) is None]
    if absent:
        return f"RETRAIN__BACKEND={backend} needs {', '.join(absent)} (the trainer image)"
    return None


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
