"""The ops port of a process that serves no API (the worker, a bot that polls on its own):
``/healthz`` (alive), ``/readyz`` (able to do its work) and ``/metrics`` (the core's metrics:
predictions, labels, fallbacks, backend errors and the drift gauges)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST as PROMETHEUS_TEXT

from core.errors import AppError
from core.wiring import Core

log = logging.getLogger(__name__)

Readiness = Callable[[], Awaitable[dict[str, Any]]]
"""What the process reports when it can work; raises AppError when it cannot."""


def ops_app(core: Core, name: str, readiness: Readiness) -> FastAPI:
    metrics = core.metrics
    app = FastAPI(title=f"waimai {name}: ops", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "process": name}

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            state = await readiness()
        except AppError as error:
            body = {"status": "unavailable", "process": name, "error": error.message}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready", "process": name, **state})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=PROMETHEUS_TEXT)

    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The process that runs this server owns the signals (it stops the server)."""
        yield


async def serve_ops(
    core: Core, name: str, port: int, readiness: Readiness, stop: asyncio.Event
) -> None:
    """Serve the ops port on ``OPS__HOST``:``port`` until ``stop`` is set; port 0 serves
    nothing."""
    if port == 0:
        return
    host = core.settings.ops.host
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
        listening.listen(128)  # here, so that a port taken meanwhile is refused here too
    except OSError as error:
        listening.close()
        log.error("the %s's ops port %s:%s is not served: %s", name, host, port, error)
        return
    config = uvicorn.Config(
        ops_app(core, name, readiness),
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopped.cancel()
    try:
        await serving
    except (Exception, SystemExit) as error:  # uvicorn exits on errors; the process goes on
        log.error("the %s's ops port stopped: %r", name, error)
