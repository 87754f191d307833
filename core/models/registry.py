"""Model versions: register, list, promote and roll back, each in its own transaction."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from core.errors import Conflict, NoActiveModel, NotFound
from core.store.db import StoreService, unit_of_work
from core.store.tables import ModelStatus, ModelVersion, utcnow


def register(
    engine: Engine,
    *,
    backend: str,
    model_ref: str,
    metrics: dict[str, Any],
    snapshot: str | None = None,
    note: str = "",
) -> ModelVersion:
    """Record a new candidate version."""
    with unit_of_work(engine) as session:
        version = ModelVersion(
            backend=backend, model_ref=model_ref, metrics=metrics, snapshot=snapshot, note=note
        )
        session.add(version)
        session.flush()
        return version


def record_metrics(
    engine: Engine, version_id: int, metrics: dict[str, Any], *, activate_if_none: bool = False
) -> ModelVersion:
    """Store a version's holdout metrics; ``activate_if_none`` activates it if nothing is active."""
    with unit_of_work(engine) as session:
        version = session.get(ModelVersion, version_id, with_for_update=True)
        if version is None:
            raise NotFound(f"model version {version_id} does not exist")
        version.metrics = metrics
        if activate_if_none and _active(session) is None:
            version.status = ModelStatus.ACTIVE
            version.promoted_at = utcnow()
            version.note += "; active because no model was"
        session.add(version)
        return version


def list_versions(engine: Engine) -> list[ModelVersion]:
    with Session(engine) as session:
        return list(session.exec(select(ModelVersion).order_by(col(ModelVersion.id).desc())).all())


def get(engine: Engine, version_id: int) -> ModelVersion:
    with Session(engine) as session:
        version = session.get(ModelVersion, version_id)
    if version is None:
        raise NotFound(f"model version {version_id} does not exist")
    return version


def active(engine: Engine) -> ModelVersion:
    with Session(engine) as session:
        version = _active(session)
    if version is None:
        raise NoActiveModel("no model is active yet: run `waimai train local`")
    return version


def has_active(engine: Engine) -> bool:
    return active_or_none(engine) is not None


def active_or_none(engine: Engine) -> ModelVersion | None:
    with Session(engine) as session:
        return _active(session)


def decide(
    engine: Engine, version_id: int, promote_it: bool, reason: str, metrics: dict[str, Any]
) -> ModelVersion:
    """Record the gate's verdict on a candidate: promote it, or reject it, with the reason."""
    with unit_of_work(engine) as session:
        version = session.get(ModelVersion, version_id, with_for_update=True)
        if version is None:
            raise NotFound(f"model version {version_id} does not exist")
        if version.status != ModelStatus.CANDIDATE:
            raise Conflict(f"model version {version_id} is {version.status}, not a candidate")
        version.metrics = metrics
        version.note = reason
        if not promote_it:
            version.status = ModelStatus.REJECTED
        session.add(version)
    return promote(engine, version_id, note=reason) if promote_it else version


def latest_of_backend(
    engine: Engine, backend: str, exclude: Collection[int] = ()
) -> ModelVersion | None:
    """The most recently promoted version of ``backend`` not in ``exclude``: a fallback."""
    with Session(engine) as session:
        return session.exec(
            select(ModelVersion)
            .where(
                ModelVersion.backend == backend,
                col(ModelVersion.status).in_([ModelStatus.ACTIVE, ModelStatus.RETIRED]),
                col(ModelVersion.id).not_in(exclude),
            )
            .order_by(col(ModelVersion.promoted_at).desc(), col(ModelVersion.id).desc())
        ).first()


def promote(
    engine: Engine, version_id: int, note: str = "", metrics: dict[str, Any] | None = None
) -> ModelVersion:
    """Make ``version_id`` the active version (with new ``metrics``, if given); the one it
    replaces is retired."""
    with unit_of_work(engine) as session:
        version = session.get(ModelVersion, version_id, with_for_update=True)
        if version is None:
            raise NotFound(f"model version {version_id} does not exist")
        if version.status == ModelStatus.ACTIVE:
            raise Conflict(f"model version {version_id} is already active")
        current = _active(session)
        if current is not None:
            current.status = ModelStatus.RETIRED
            session.add(current)
            session.flush()
        version.status = ModelStatus.ACTIVE
        version.promoted_at = utcnow()
        if note:
            version.note = note
        if metrics is not None:
            version.metrics = metrics
        session.add(version)
        return version


def rollback(engine: Engine) -> ModelVersion:
    """Re-activate the version that was active before the current one."""
    with Session(engine) as session:
        current = _active(session)
        if current is None:
            raise NoActiveModel("no model is active, so there is nothing to roll back from")
        previous = session.exec(
            select(ModelVersion)
            .where(ModelVersion.status == ModelStatus.RETIRED, col(ModelVersion.id) != current.id)
            .order_by(col(ModelVersion.promoted_at).desc())
        ).first()
    if previous is None or previous.id is None:
        raise Conflict("there is no earlier active version to roll back to")
    return promote(engine, previous.id, note=f"rollback from version {current.id}")


def _active(session: Session) -> ModelVersion | None:
    return session.exec(
        select(ModelVersion).where(ModelVersion.status == ModelStatus.ACTIVE)
    ).first()


class ModelVersions(StoreService):
    """The registry for front doors and the loop: each call runs where store work belongs."""

    async def register(
        self,
        *,
        backend: str,
        model_ref: str,
        metrics: dict[str, Any],
        snapshot: str | None = None,
        note: str = "",
    ) -> ModelVersion:
        return await self._run(
            register,
            backend=backend,
            model_ref=model_ref,
            metrics=metrics,
            snapshot=snapshot,
            note=note,
        )

    async def record_metrics(
        self, version_id: int, metrics: dict[str, Any], *, activate_if_none: bool = False
    ) -> ModelVersion:
        return await self._run(
            record_metrics, version_id, metrics, activate_if_none=activate_if_none
        )

    async def all(self) -> list[ModelVersion]:
        """Newest first."""
        return await self._run(list_versions)

    async def get(self, version_id: int) -> ModelVersion:
        return await self._run(get, version_id)

    async def active(self) -> ModelVersion:
        return await self._run(active)

    async def active_or_none(self) -> ModelVersion | None:
        return await self._run(active_or_none)

    async def has_active(self) -> bool:
        return await self._run(has_active)

    async def decide(
        self, version_id: int, promote: bool, reason: str, metrics: dict[str, Any]
    ) -> ModelVersion:
        return await self._run(decide, version_id, promote, reason, metrics)

    async def latest_of_backend(
        self, backend: str, exclude: Collection[int] = ()
    ) -> ModelVersion | None:
        return await self._run(latest_of_backend, backend, exclude)

    async def promote(
        self, version_id: int, note: str = "", metrics: dict[str, Any] | None = None
    ) -> ModelVersion:
        return await self._run(promote, version_id, note, metrics)

    async def rollback(self) -> ModelVersion:
        return await self._run(rollback)
