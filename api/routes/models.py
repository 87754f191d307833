"""Model versions (admin keys only): list, promote, roll back; and asking for a retrain."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import AdminDep
from api.deps import CoreDep
from api.errors import ERROR_RESPONSES, responses
from api.params import Id
from api.resources import ModelList, ModelVersionOut, RetrainTicketOut
from api.schemas import RetrainIn
from core.models import registry

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)


@router.get("")
def list_models(_admin: AdminDep, core: CoreDep) -> ModelList:
    """Every model version, newest first, with its holdout figures."""
    return ModelList(models=[ModelVersionOut.of(v) for v in registry.list_versions(core.engine)])


@router.post("/{version_id}/promote", responses=responses(404, 409))
def promote(version_id: Id, admin: AdminDep, core: CoreDep) -> ModelVersionOut:
    """Make a version active now; the one it replaces is retired (and kept for rollback)."""
    version = registry.promote(core.engine, version_id, note=f"promoted by {admin.name} (API)")
    return ModelVersionOut.of(version)


@router.post("/rollback", responses=responses(409, 503))
def rollback(_admin: AdminDep, core: CoreDep) -> ModelVersionOut:
    """Re-activate the version that was active before the current one."""
    return ModelVersionOut.of(registry.rollback(core.engine))


retrain_router = APIRouter(prefix="/v1", tags=["models"], responses=ERROR_RESPONSES)


@retrain_router.post("/retrain", status_code=202)
async def request_retrain(body: RetrainIn, admin: AdminDep, core: CoreDep) -> RetrainTicketOut:
    """Ask the learning loop's worker for a retrain (it runs within minutes); asking again while
    one is pending returns that one."""
    ticket = await core.retrain_requests.request(
        requested_by=admin.name, reason=body.reason, backend=body.backend
    )
    return RetrainTicketOut.of(ticket)
