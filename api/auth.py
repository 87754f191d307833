"""Who is calling: Bearer API keys, the admin role, and a rate limit per key."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from api.deps import core_of
from core.access.clients import Caller
from core.errors import PermissionDenied, RateLimited, Unauthenticated


class RateLimit:
    """A token bucket per key: ``rate`` requests per period, in bursts of up to the same number.

    Kept in memory, per process. Not the ``limits`` package: its in-memory storage starts a
    timer thread to expire counters, up to 100 a second, which under load cost more than the
    request itself.
    """

    def __init__(self, rate: str) -> None:
        count, _, unit = rate.partition("/")
        self._rate = rate
        self._capacity = float(count)
        self._per_second = self._capacity / _SECONDS[unit]
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> None:
        now = time.monotonic()
        tokens, then = self._buckets.get(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - then) * self._per_second)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            retry_after = max(1, math.ceil((1 - tokens) / self._per_second))
            raise RateLimited(
                f"more than {self._rate} requests for this key; try again in {retry_after} s",
                retry_after_s=retry_after,
            )
        self._buckets[key] = (tokens - 1, now)


_SECONDS = {"second": 1, "minute": 60, "hour": 3600}


_bearer = HTTPBearer(auto_error=False, description="An API key from `waimai keys create`.")
BEARER_SECURITY: dict[str, Any] = {"security": [{_bearer.scheme_name: []}]}
"""``openapi_extra`` that documents the key for a route that calls ``authenticate`` itself."""


def bearer_key(request: Request) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, read as HTTPBearer reads it."""
    scheme, key = get_authorization_scheme_param(request.headers.get("authorization"))
    return key if scheme.lower() == "bearer" and key else None


async def authenticate(request: Request, key: str | None) -> Caller:
    """The client holding ``key``, within its rate limit."""
    if not key:
        raise Unauthenticated("send the API key as 'Authorization: Bearer <key>'")
    caller = await core_of(request).clients.authenticate(key)
    rate_limit: RateLimit = request.app.state.rate_limit
    rate_limit.check(caller.name)
    return caller


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    return await authenticate(request, credentials.credentials if credentials else None)


async def admin(caller: Annotated[Caller, Depends(authenticated)]) -> Caller:
    if not caller.is_admin:
        raise PermissionDenied("this endpoint is for admin keys only")
    return caller


CallerDep = Annotated[Caller, Depends(authenticated)]
AdminDep = Annotated[Caller, Depends(admin)]


def scope(caller: Caller) -> str | None:
    """The tenant whose data the caller may see (``Principal.scope``)."""
    return caller.principal.scope
