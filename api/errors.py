"""Every error leaves the API in one shape, ``{"error": {"code", "message"}}``, mapped here once."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api.answers import ErrorOut
from core.errors import (
    AppError,
    BackendUnavailable,
    Conflict,
    DataError,
    InvalidInput,
    NoActiveModel,
    NotFound,
    PermissionDenied,
    RateLimited,
    StoreUnavailable,
    Unauthenticated,
)
from core.store.db import STORE_OUTAGES

log = logging.getLogger(__name__)

STATUS: dict[type[AppError], int] = {
    Unauthenticated: 401,
    PermissionDenied: 403,
    NotFound: 404,
    Conflict: 409,
    InvalidInput: 422,
    DataError: 422,
    RateLimited: 429,
    BackendUnavailable: 503,
    NoActiveModel: 503,
    StoreUnavailable: 503,
}
HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def status_of(error: AppError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400


async def _app_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, AppError)
    headers = {}
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after_s)
    return error_response(status_of(error), error.code, error.message, headers)


async def _store_outage(request: Request, error: Exception) -> JSONResponse:
    cause = str(getattr(error, "orig", None) or error).strip().splitlines()
    log.warning(
        "store unavailable on %s %s: %s: %s",
        request.method,
        request.url.path,
        type(error).__name__,
        cause[0] if cause else "",
    )
    unavailable = StoreUnavailable("the store is not available now; try again shortly")
    return error_response(503, unavailable.code, unavailable.message, {"Retry-After": "1"})


async def _invalid_request(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [_describe(problem) for problem in error.errors()]
    message = "; ".join(problems[:5]) + (
        f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    )
    return error_response(422, InvalidInput.code, message)


async def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    code = HTTP_CODES.get(error.status_code, f"http_{error.status_code}")
    return error_response(error.status_code, code, str(error.detail), dict(error.headers or {}))


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(500, "internal_error", "an unexpected error occurred; it was logged")


def _describe(problem: dict[str, Any]) -> str:
    """``reviews[3].text: String should have at most 2000 characters``."""
    if problem.get("type") == "json_invalid":
        return f"body: not valid JSON ({problem.get('ctx', {}).get('error', 'cannot parse')})"
    where = ""
    for part in problem.get("loc", ())[1:]:
        if isinstance(part, int):
            where += f"[{part}]"
        else:
            where += f".{part}" if where else str(part)
    return f"{where or 'body'}: {problem.get('msg', 'is not valid')}"


def install(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    for outage in STORE_OUTAGES:
        app.add_exception_handler(outage, _store_outage)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    for status, description in {
        400: "The body cannot be read (not UTF-8).",
        401: "No valid API key (or webhook signature).",
        403: "The key may not do this (admin only).",
        413: "The body is over 1 MiB.",
        422: "The input is not valid; the message names the field and index.",
        429: "Too many requests for this key.",
    }.items()
}
ERROR_RESPONSES[429]["headers"] = {
    "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
}
"""Errors any authenticated endpoint may give (set on its router)."""


def refusals(
    status: int, description: str, examples: dict[str, tuple[str, str]]
) -> dict[int | str, dict[str, Any]]:
    """One error response described for an endpoint, with named examples (code, message) of
    the errors it gives, so that a client generated from the schema knows them."""
    shown = {
        name: {"value": {"error": {"code": code, "message": message}}}
        for name, (code, message) in examples.items()
    }
    return {
        status: {
            "model": ErrorOut,
            "description": description,
            "content": {"application/json": {"examples": shown}},
        }
    }


INVALID_REVIEWS = refusals(
    422,
    ERROR_RESPONSES[422]["description"]
    + " A review text must hold readable characters: one that is empty once stripped, looks "
    "like binary data (NUL or U+FFFD) or holds only control, format or space characters is "
    "refused.",
    {
        "too_long": (
            "invalid_input",
            "reviews[3].text: String should have at most 2000 characters",
        ),
        "binary": ("invalid_input", "reviews[0].text looks like binary data, not a review"),
        "unreadable": (
            "invalid_input",
            "reviews[0].text has no readable characters (only control or format characters)",
        ),
    },
)
"""The 422 of the routes that take reviews to classify."""


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The further errors an endpoint may give."""
    described = {
        404: "No such resource (or not yours).",
        409: "The request contradicts the current state.",
        415: "The body is not sent as JSON.",
        503: "No model can answer now, or the store cannot be reached (nothing was stored).",
    }
    return {status: {"model": ErrorOut, "description": described[status]} for status in statuses}
