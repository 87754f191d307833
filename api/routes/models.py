"""Model versions (admin keys only): list, promote, roll back; and asking for a retrain."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.answers import ModelListOut, ModelVersionOut, RetrainTicketOut
from api.auth import AdminDep
from api.deps import CoreDep
from api.errors import ERROR_RESPONSES, responses
from api.inputs import PromoteIn, RetrainIn
from api.params import Id

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)


@router.get("")
async def list_models(_admin: AdminDep, core: CoreDep) -> ModelListOut:
    """Every model version, newest first, with its holdout figures."""
    return ModelListOut(models=[ModelVersionOut.of(v) for v in await core.models.all()])


@router.get(
    "/{version_id}/report.png",
    response_class=Response,
    responses={**responses(404), 200: {"content": {"image/png": {}}, "description": "A PNG."}},
)
async def report(version_id: Id, _admin: AdminDep, core: CoreDep) -> Response:
    """The version's report as a picture: its training curves, the holdout accuracy and macro-F1
    of every version with the gate's decisions, its confusion matrix and reliability diagram."""
    return Response(await core.reports.png(version_id), media_type="image/png")


@router.post("/{version_id}/promote", responses=responses(404, 409, 503))
async def promote(
    version_id: Id, admin: AdminDep, core: CoreDep, body: PromoteIn | None = None
) -> ModelVersionOut:
    """Make a version active if the holdout gate lets it in, as it does the loop's candidates
    (a vLLM version's adapter is loaded and answers canary reviews first). The one it replaces
    is retired, and kept for rollback. A version the gate keeps out is a 409 `gate_refused`
    with the gate's reason; `{"force": true}` overrides the gate, and is recorded on the
    version. Judging a version classifies the whole holdout with it and with the active model:
    seconds on the CPU model, longer on a remote one."""
    force = body is not None and body.force
    version = await core.gate.promote(version_id, by=f"{admin.name} (API)", force=force)
    return ModelVersionOut.of(version)


@router.post("/rollback", responses=responses(409, 503))
async def rollback(_admin: AdminDep, core: CoreDep) -> ModelVersionOut:
    """Re-activate the version that was active before the current one."""
    return ModelVersionOut.of(await core.models.rollback())


retrain_router = APIRouter(prefix="/v1", tags=["models"], responses=ERROR_RESPONSES)


@retrain_router.post("/retrain", status_code=202)
async def request_retrain(body: RetrainIn, admin: AdminDep, core: CoreDep) -> RetrainTicketOut:
    """Ask the learning loop's worker for a retrain (it runs within minutes); asking again while
    one is pending returns that one."""
    ticket = await core.retrain_requests.request(
        requested_by=admin.name, reason=body.reason, backend=body.backend
    )
    return RetrainTicketOut.of(ticket)
