"""``POST /bench/echo``: the bare baseline bench/api_load.py compares classify against.

Mounted only with ``API__BENCH_ECHO=true`` (refused in production); not in the OpenAPI.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

router = APIRouter(include_in_schema=False)


@router.post("/bench/echo")
async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/json")
