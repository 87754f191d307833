"""The operator page's routes: the page, its report pictures, promote and roll back through the
gate, and logging in and out. Every action is a POST form that redirects back to the page, with
what came of it shown there once."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from api.admin.session import (
    FLASH,
    OperatorDep,
    check_form_token,
    csrf_token,
    flash,
    log_in,
    logged_in_session,
    tokens_match,
)
from api.admin.views import templates
from api.deps import CoreDep, core_of
from core.errors import AppError, Conflict, PermissionDenied, Unauthenticated
from core.labels.overview import VersionFigures
from core.models.gate import GATE_REFUSED
from core.store.tables import ModelStatus

router = APIRouter()

WINDOWS = (1, 7)
"""Days of reviews the correction rates may cover: the read grows with the reviews in the window
(on PostgreSQL with 1M reviews over 180 days, 7 days take 40-50 ms and 30 days near 300)."""


@router.get("/", response_class=HTMLResponse, name="admin_page")
async def page(
    request: Request,
    who: OperatorDep,
    core: CoreDep,
    days: Annotated[int, Query(ge=1, le=max(WINDOWS))] = 7,
) -> HTMLResponse:
    overview = await core.loop_overview.overview(window_days=days)
    active = next((v for v in overview.versions if v.status == ModelStatus.ACTIVE), None)
    return templates.TemplateResponse(
        request,
        "page.html",
        {
            "who": who,
            "csrf": csrf_token(request.session),
            "message": request.session.pop(FLASH, None),
            "overview": overview,
            "active": active,
            "windows": WINDOWS,
            "days": days,
            "report_tag": _report_tag(overview.versions),
        },
    )


@router.get("/models/{version_id}/report.png", name="admin_report")
async def report(version_id: int, _who: OperatorDep, core: CoreDep) -> Response:
    """The version's report (as ``GET /v1/models/{id}/report.png``), for the page's images."""
    png = await core.reports.png(version_id)
    # The page asks with a tag that changes whenever a version's status does.
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/models/{version_id}/promote", name="admin_promote")
async def promote(
    request: Request,
    version_id: int,
    who: OperatorDep,
    core: CoreDep,
    csrf: Annotated[str, Form()] = "",
    force: Annotated[bool, Form()] = False,
) -> RedirectResponse:
    check_form_token(request, who, csrf)
    try:
        version = await core.gate.promote(version_id, by=f"{who.name} (operator page)", force=force)
    except Conflict as error:
        refused = "The gate refused" if error.code == GATE_REFUSED else "Not promoted"
        flash(request.session, "error", f"{refused}: {error.message}")
    except AppError as error:
        flash(request.session, "error", f"Not promoted: {error.message}")
    else:
        how = "forced past the gate" if force else "through the gate"
        flash(request.session, "ok", f"Version {version.id} is active, {how}: {version.note}")
    return _back_to_page(request)


@router.post("/models/rollback", name="admin_rollback")
async def rollback(
    request: Request, who: OperatorDep, core: CoreDep, csrf: Annotated[str, Form()] = ""
) -> RedirectResponse:
    check_form_token(request, who, csrf)
    try:
        version = await core.models.rollback()
    except AppError as error:
        flash(request.session, "error", f"Not rolled back: {error.message}")
    else:
        flash(request.session, "ok", f"Rolled back: version {version.id} is active again")
    return _back_to_page(request)


@router.get("/login", response_class=HTMLResponse, name="admin_login_form")
async def login_form(request: Request) -> Response:
    if logged_in_session(request) is not None:
        return _back_to_page(request)
    return _login_page(request, request.session.pop(FLASH, None))


@router.post("/login", name="admin_login")
async def login(
    request: Request,
    core: CoreDep,
    key: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    if not tokens_match(request.session, csrf):
        message = "the login form had expired: try again"
        return _login_page(request, {"kind": "error", "text": message}, status_code=403)
    if not key.strip():
        message = "enter an admin API key (from `waimai keys create --name NAME --role admin`)"
        return _login_page(request, {"kind": "error", "text": message}, status_code=401)
    try:
        session = await core.admin_sessions.open(key.strip())
    except (Unauthenticated, PermissionDenied) as error:
        status = 403 if isinstance(error, PermissionDenied) else 401
        return _login_page(request, {"kind": "error", "text": error.message}, status_code=status)
    log_in(request.session, session)
    return _back_to_page(request)


@router.post("/logout", name="admin_logout")
async def logout(
    request: Request, who: OperatorDep, csrf: Annotated[str, Form()] = ""
) -> RedirectResponse:
    check_form_token(request, who, csrf)
    request.session.clear()
    flash(request.session, "ok", f"{who.name} logged out")
    return RedirectResponse(request.url_for("admin_login_form").path, status_code=303)


def _login_page(
    request: Request, message: dict[str, str] | None, status_code: int = 200
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "login.html",
        {
            "csrf": csrf_token(request.session),
            "message": message,
            "cookie_will_not_stick": _secure_cookie_over_plain_http(request),
        },
        status_code=status_code,
    )


def _secure_cookie_over_plain_http(request: Request) -> bool:
    """Browsers drop a Secure cookie sent over plain HTTP, except to a loopback address."""
    secure = core_of(request).settings.api.session_cookie_secure
    loopback = request.url.hostname in ("localhost", "127.0.0.1", "::1")
    return secure and request.url.scheme == "http" and not loopback


def _back_to_page(request: Request) -> RedirectResponse:
    return RedirectResponse(request.url_for("admin_page").path, status_code=303)


def _report_tag(versions: list[VersionFigures]) -> str:
    statuses = ",".join(f"{v.id}:{v.status}" for v in versions)
    return hashlib.sha256(statuses.encode()).hexdigest()[:12]
