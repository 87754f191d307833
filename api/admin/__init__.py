"""The operator page, served under /admin: the model versions with their reports, promotion and
rollback through the gate, and the learning loop at a glance. Server-rendered (Jinja2), behind
an admin API key or a login that exchanges one for a signed session cookie.

``create_admin_app`` builds it as an app of its own, mounted by ``api.main``: its session
middleware, security headers and HTML error pages touch none of the JSON API's requests, and
its HTML forms stay out of the API's OpenAPI document.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware

from api.admin.routes import router
from api.admin.session import LoginNeeded, flash, login_url, wants_html
from api.admin.views import HERE, templates
from api.auth import RateLimit
from api.errors import status_of
from core.errors import AppError
from core.store.db import STORE_OUTAGES
from core.wiring import Core

log = logging.getLogger(__name__)

SESSION_COOKIE = "waimai_admin"
MOUNT_PATH = "/admin"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def create_admin_app(core: Core, rate_limit: RateLimit) -> FastAPI:
    """The operator page over ``core``; Bearer keys share the API's ``rate_limit``."""
    api = core.settings.api
    secret = api.session_secret.get_secret_value() if api.session_secret else None
    if secret is None:
        level = logging.WARNING if core.settings.env == "production" else logging.INFO
        log.log(level, "API__SESSION_SECRET is not set: operator-page logins end at a restart")
        secret = secrets.token_urlsafe(32)
    admin = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    admin.state.core = core
    admin.state.rate_limit = rate_limit
    admin.include_router(router)
    admin.mount("/static", StaticFiles(directory=HERE / "static"), name="admin_static")
    admin.middleware("http")(_security_headers)
    admin.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie=SESSION_COOKIE,
        max_age=round(api.session_hours * 3600),
        path=MOUNT_PATH,
        same_site="strict",
        https_only=api.session_cookie_secure,
    )
    admin.add_exception_handler(LoginNeeded, _login_needed)
    admin.add_exception_handler(AppError, _app_error)
    admin.add_exception_handler(RequestValidationError, _invalid_request)
    admin.add_exception_handler(HTTPException, _http_error)
    for outage in STORE_OUTAGES:
        admin.add_exception_handler(outage, _store_outage)
    return admin


async def _security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    response.headers.update(SECURITY_HEADERS)
    if response.headers.get("content-type", "").startswith("text/html"):
        response.headers["Cache-Control"] = "no-store"
    return response


async def _login_needed(request: Request, error: Exception) -> Response:
    assert isinstance(error, LoginNeeded)
    if request.method == "GET" and wants_html(request):
        flash(request.session, "error", error.reason)
        return RedirectResponse(login_url(request), status_code=303)
    return _error_page(request, 401, error.reason)


async def _app_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, AppError)
    return _error_page(request, status_of(error), error.message)


async def _invalid_request(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'][1:])}: {problem['msg']}"
        for problem in error.errors()
    )
    return _error_page(request, 422, problems or "the request is not valid")


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return _error_page(request, error.status_code, str(error.detail))


async def _store_outage(request: Request, error: Exception) -> Response:
    log.warning("store unavailable on %s %s: %r", request.method, request.url.path, error)
    return _error_page(request, 503, "the store is not available now; try again shortly")


def _error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "error.html", {"status": status, "message": message}, status_code=status
    )
