"""Cloud fine-tune jobs in the store: one per (backend, snapshot); each change, one transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.errors import Conflict, NotFound
from core.store.db import unit_of_work
from core.store.tables import FineTuneJob, ModelVersion, Snapshot, utcnow


def create(engine: Engine, job: FineTuneJob) -> FineTuneJob:
    """Record a job before anything is sent; Conflict if the snapshot has one already."""
    try:
        with unit_of_work(engine) as session:
            session.add(job)
            session.flush()
            return job
    except IntegrityError:
        raise Conflict(
            f"snapshot {job.snapshot[:12]} already has a {job.backend} fine-tune job"
        ) from None


def of_snapshot(engine: Engine, backend: str, snapshot: str) -> FineTuneJob | None:
    with Session(engine) as session:
        return session.exec(
            select(FineTuneJob).where(
                FineTuneJob.backend == backend, FineTuneJob.snapshot == snapshot
            )
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
        job = session.get(FineTuneJob, job_id)
        if job is None:
            raise NotFound(f"fine-tune job {job_id} does not exist")
        for name, value in changes.items():
            setattr(job, name, value)
        job.updated_at = utcnow()
        session.add(job)
        return job


def register_model(engine: Engine, job_id: int | None, note: str) -> FineTuneJob:
    """The job's fine-tuned model as a candidate version, recorded with the job, once."""
    with unit_of_work(engine) as session:
        job = session.get(FineTuneJob, job_id, with_for_update=True)
        if job is None or job.fine_tuned_model is None:
            raise NotFound(f"fine-tune job {job_id} has no fine-tuned model")
        if job.model_version_id is None:
            version = ModelVersion(
                backend=job.backend,
                model_ref=job.fine_tuned_model,
                snapshot=job.snapshot,
                note=note,
            )
            session.add(version)
            session.flush()
            job.model_version_id = version.id
            job.updated_at = utcnow()
            session.add(job)
        return job


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
