"""Who is at the operator page: an admin key sent as a Bearer header, or a login that exchanged
one for a session cookie (signed by Starlette's SessionMiddleware), and the token that every
form posted with the cookie must carry."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from starlette.datastructures import URL

from api.auth import authenticate, bearer_key
from api.deps import core_of
from core.access.admin_sessions import AdminSession
from core.errors import AppError, PermissionDenied

LOGIN = "admin"
CSRF = "csrf"
FLASH = "flash"


class LoginNeeded(Exception):
    """No admin key and no live login: a browser is sent to the login form, anything else is
    refused with 401."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Operator:
    name: str
    csrf: str | None
    """The token the session's forms carry; None when the request brought a Bearer key (no
    cookie, so nothing for another site to ride on)."""


def csrf_token(session: dict[str, Any]) -> str:
    """The session's form token, made on first use."""
    token = session.get(CSRF)
    if not isinstance(token, str):
        token = session[CSRF] = secrets.token_urlsafe(32)
    return token


def tokens_match(session: dict[str, Any], sent: str) -> bool:
    expected = session.get(CSRF)
    return isinstance(expected, str) and hmac.compare_digest(expected.encode(), sent.encode())


def log_in(session: dict[str, Any], login: AdminSession) -> None:
    session.clear()
    session[LOGIN] = {
        "client_id": login.client_id,
        "name": login.name,
        "key_fingerprint": login.key_fingerprint,
        "at": time.time(),
    }
    csrf_token(session)


def flash(session: dict[str, Any], kind: Literal["ok", "error"], text: str) -> None:
    """A message for the next page the session sees (and only that one)."""
    session[FLASH] = {"kind": kind, "text": text}


def logged_in_session(request: Request) -> AdminSession | None:
    """The login the cookie holds, None when it holds none or it has expired."""
    login = request.session.get(LOGIN)
    if not isinstance(login, dict):
        return None
    lifetime = core_of(request).settings.api.session_hours * 3600
    if time.time() - float(login.get("at", 0)) > lifetime:
        return None
    return AdminSession(int(login["client_id"]), str(login["name"]), str(login["key_fingerprint"]))


async def operator(request: Request) -> Operator:
    key = bearer_key(request)
    if key is not None:
        caller = await authenticate(request, key)
        if not caller.is_admin:
            raise PermissionDenied("the operator page is for admin keys only")
        return Operator(caller.name, csrf=None)
    had_login = LOGIN in request.session
    login = logged_in_session(request)
    if login is None:
        request.session.pop(LOGIN, None)
        raise LoginNeeded(
            "your login has expired: log in again" if had_login else "log in with an admin key"
        )
    try:
        caller = await core_of(request).admin_sessions.check(login)
    except AppError as error:
        request.session.pop(LOGIN, None)
        raise LoginNeeded(error.message) from error
    return Operator(caller.name, csrf=csrf_token(request.session))


OperatorDep = Annotated[Operator, Depends(operator)]


def check_form_token(request: Request, who: Operator, sent: str) -> None:
    """A form posted with the session cookie must carry the session's token."""
    if who.csrf is not None and not tokens_match(request.session, sent):
        raise PermissionDenied(
            "the form's security token does not match your login (an old page, or a page from "
            "another site): reload the page and try again"
        )


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def login_url(request: Request) -> URL:
    return URL(request.url_for("admin_login_form").path)
