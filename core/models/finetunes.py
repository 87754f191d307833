"""Cloud fine-tune jobs in the store: attempts of a snapshot, each change one transaction.

A change that the admins must hear of (a refusal, a pause, a model to deploy) is stored in the
same transaction as the notification that tells them, so that they hear of it exactly once.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.errors import Conflict, NotFound
from core.store.db import StoreService, unit_of_work
from core.store.outbox import FineTuneNotice, notification
from core.store.tables import (
    FineTuneJob,
    FineTuneStatus,
    ModelVersion,
    Notification,
    Snapshot,
    as_utc,
    utcnow,
)


def create(engine: Engine, job: FineTuneJob) -> FineTuneJob:
    """Record a job before anything is sent; Conflict if that attempt exists already."""
    try:
        with unit_of_work(engine) as session:
            session.add(job)
            session.flush()
            return job
    except IntegrityError:
        raise Conflict(
            f"snapshot {job.snapshot[:12]} already has a {job.backend} fine-tune job "
            f"(attempt {job.attempt})"
        ) from None


def of_snapshot(engine: Engine, backend: str, snapshot: str) -> FineTuneJob | None:
    """The snapshot's latest attempt."""
    with Session(engine) as session:
        return session.exec(
            select(FineTuneJob)
            .where(FineTuneJob.backend == backend, FineTuneJob.snapshot == snapshot)
            .order_by(col(FineTuneJob.attempt).desc())
        ).first()


def listing(
    engine: Engine, backend: str | None = None, *, unfinished_only: bool = False
) -> list[FineTuneJob]:
    """Jobs, newest first; ``unfinished_only``: those whose outcome is not recorded yet."""
    query = select(FineTuneJob)
    if backend is not None:
        query = query.where(FineTuneJob.backend == backend)
    if unfinished_only:
        query = query.where(col(FineTuneJob.finished_at).is_(None))
    with Session(engine) as session:
        return list(session.exec(query.order_by(col(FineTuneJob.id).desc())).all())


def find(engine: Engine, ref: str) -> FineTuneJob:
    """A job by our id (digits) or the provider's (``ftjob-...``)."""
    query = select(FineTuneJob).where(
        FineTuneJob.id == int(ref) if ref.isdigit() else FineTuneJob.external_id == ref
    )
    with Session(engine) as session:
        job = session.exec(query).first()
    if job is None:
        raise NotFound(f"fine-tune job {ref} does not exist")
    return job


def update(engine: Engine, job_id: int | None, **changes: Any) -> FineTuneJob:
    with unit_of_work(engine) as session:
        job = _locked(session, job_id)
        _apply(job, changes)
        session.add(job)
        return job


def end(
    engine: Engine, job_id: int | None, notice: FineTuneNotice | None = None, **changes: Any
) -> FineTuneJob:
    """Record the job's outcome (``changes``) and close it, with ``notice`` for the admins;
    a job closed already is returned as it is, and nobody is told twice."""
    with unit_of_work(engine) as session:
        job = _locked(session, job_id)
        if job.finished_at is not None:
            return job
        _apply(job, changes | {"finished_at": utcnow(), "paused_until": None})
        session.add(job)
        if notice is not None:
            session.add(notification(notice))
        return job


def pause(
    engine: Engine, job_id: int | None, until: datetime, reason: str, notice: FineTuneNotice
) -> FineTuneJob:
    """No call is made for the job, nor for any other of its backend, until ``until``; the
    admins hear of it unless a pause of the backend is under way already."""
    with unit_of_work(engine) as session:
        job = _locked(session, job_id)
        under_way = _paused(session, job.backend) is not None
        _apply(job, {"paused_until": until, "last_event": reason})
        session.add(job)
        if not under_way:
            session.add(notification(notice))
        return job


def paused(engine: Engine, backend: str) -> FineTuneJob | None:
    """The job whose pause of ``backend`` lasts longest, if one is under way."""
    with Session(engine) as session:
        return _paused(session, backend)


def spent_since(engine: Engine, backend: str, since: datetime) -> float:
    """The estimated cost of the jobs sent to ``backend`` since ``since`` (yuan)."""
    with Session(engine) as session:
        spent = session.exec(
            select(func.sum(FineTuneJob.estimated_cost)).where(
                FineTuneJob.backend == backend,
                col(FineTuneJob.external_id).is_not(None),
                col(FineTuneJob.created_at) >= since,
            )
        ).one()
    return float(spent or 0.0)


def last_succeeded(engine: Engine, backend: str) -> FineTuneJob | None:
    with Session(engine) as session:
        return session.exec(
            select(FineTuneJob)
            .where(
                FineTuneJob.backend == backend,
                FineTuneJob.status == FineTuneStatus.SUCCEEDED,
            )
            .order_by(col(FineTuneJob.id).desc())
        ).first()


def tell_once_since(engine: Engine, notice: FineTuneNotice, since: datetime) -> bool:
    """Store ``notice`` for the admins unless one of its kind was stored since ``since``;
    whether it was stored."""
    with unit_of_work(engine) as session:
        earlier = session.exec(
            select(Notification).where(
                Notification.kind == FineTuneNotice.__name__,
                col(Notification.created_at) >= since,
            )
        ).all()
        if any(row.payload.get("kind") == notice.kind for row in earlier):
            return False
        session.add(notification(notice))
        return True


def register_model(engine: Engine, job_id: int | None, note: str) -> FineTuneJob:
    """The job's fine-tuned model as a candidate version, recorded with the job, once; the loss
    curves go with it."""
    with unit_of_work(engine) as session:
        job = _locked(session, job_id)
        if job.fine_tuned_model is None:
            raise NotFound(f"fine-tune job {job_id} has no fine-tuned model")
        if job.model_version_id is None:
            _add_version(session, job, job.fine_tuned_model, note)
        return job


def register_deployed(engine: Engine, job_id: int, model_code: str, note: str) -> ModelVersion:
    """``model_code``, the deployment of the job's model (a full fine-tune has to be deployed
    before it answers), as the candidate version the job produced."""
    with unit_of_work(engine) as session:
        job = _locked(session, job_id)
        if job.status != FineTuneStatus.SUCCEEDED:
            raise Conflict(f"fine-tune job {job_id} is {job.status}: it produced no model")
        if job.model_version_id is not None:
            raise Conflict(
                f"fine-tune job {job_id} has model version {job.model_version_id} already"
            )
        return _add_version(session, job, model_code, note)


def snapshot_directory(engine: Engine, content_hash: str) -> Path:
    with Session(engine) as session:
        snapshot = session.exec(
            select(Snapshot).where(Snapshot.content_hash == content_hash)
        ).first()
    if snapshot is None or not Path(snapshot.directory).is_dir():
        raise NotFound(f"the files of snapshot {content_hash[:12]} are gone")
    return Path(snapshot.directory)


def find_snapshot(engine: Engine, ref: str) -> Snapshot:
    """A snapshot by id (digits) or by the start of its content hash."""
    query = select(Snapshot).where(
        Snapshot.id == int(ref) if ref.isdigit() else col(Snapshot.content_hash).startswith(ref)
    )
    with Session(engine) as session:
        found = list(session.exec(query.limit(2)).all())
    if not found:
        raise NotFound(f"snapshot {ref} does not exist")
    if len(found) > 1:
        raise Conflict(f"snapshot {ref} is ambiguous: give more of its hash")
    return found[0]


def _locked(session: Session, job_id: int | None) -> FineTuneJob:
    job = session.get(FineTuneJob, job_id, with_for_update=True)
    if job is None:
        raise NotFound(f"fine-tune job {job_id} does not exist")
    return job


def _apply(job: FineTuneJob, changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        setattr(job, name, value)
    job.updated_at = utcnow()


def _paused(session: Session, backend: str) -> FineTuneJob | None:
    job = session.exec(
        select(FineTuneJob)
        .where(FineTuneJob.backend == backend, col(FineTuneJob.paused_until).is_not(None))
        .order_by(col(FineTuneJob.paused_until).desc())
    ).first()
    if job is None or job.paused_until is None or as_utc(job.paused_until) <= utcnow():
        return None
    return job


def _add_version(session: Session, job: FineTuneJob, model_ref: str, note: str) -> ModelVersion:
    version = ModelVersion(
        backend=job.backend,
        model_ref=model_ref,
        snapshot=job.snapshot,
        metrics={"curves": job.curves} if job.curves else {},
        note=note,
    )
    session.add(version)
    session.flush()
    job.model_version_id = version.id
    job.updated_at = utcnow()
    session.add(job)
    return version


class FineTunes(StoreService):
    """Fine-tune jobs for front doors: list them, find one, and the versions they serve."""

    async def listing(
        self, backend: str | None = None, *, unfinished_only: bool = False
    ) -> list[FineTuneJob]:
        return await self._run(listing, backend, unfinished_only=unfinished_only)

    async def find(self, ref: str) -> FineTuneJob:
        return await self._run(find, ref)

    async def find_snapshot(self, ref: str) -> Snapshot:
        return await self._run(find_snapshot, ref)

    async def register_deployed(self, job_id: int, model_code: str, note: str) -> ModelVersion:
        return await self._run(register_deployed, job_id, model_code, note)
