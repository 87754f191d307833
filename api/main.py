"""The HTTP API for platforms: ``create_app(core)`` builds it; ``waimai api`` serves it."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import APIRouter, FastAPI

from api import errors
from api.admin import MOUNT_PATH, create_admin_app
from api.auth import RateLimit
from api.json_body import document_bodies
from api.metrics import Metrics
from api.middleware import BodyLimit, RequestMetrics
from api.routes import bench, classify, feedback, health, models, reviews, stats, webhooks
from core.errors import AppError
from core.wiring import Core

log = logging.getLogger(__name__)

DESCRIPTION = """
Classifies Chinese takeaway reviews as 好评 (positive) or 差评 (negative), keeps every
prediction, and learns from the labels you send back.

Authenticate with `Authorization: Bearer <key>` (keys come from `waimai keys create`). Every
error has the shape `{"error": {"code": "...", "message": "..."}}`.
"""


Lifespan = Callable[[], AbstractAsyncContextManager[None]]


def create_app(
    core: Core, *, routers: Sequence[APIRouter] = (), lifespans: Sequence[Lifespan] = ()
) -> FastAPI:
    """The app over ``core``: the caller builds the core (and disposes of it). The composition
    root may mount more ``routers`` (e.g. the Telegram webhook) with ``lifespans`` that are
    entered in order after startup and left in reverse order at shutdown."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            version = await core.classification.ready()
            log.info("model version %s (%s) loaded", version.id, version.backend)
        except AppError as error:
            log.warning("not ready to classify yet (%s): %s", error.code, error.message)
        async with AsyncExitStack() as stack:
            for each in lifespans:
                await stack.enter_async_context(each())
            # The ~200,000 objects made by the imports and the start-up would be scanned again
            # by every full collection (50-180 ms each under load, the worst response times).
            gc.freeze()
            yield

    app = FastAPI(
        title="waimai review loop",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.core = core
    app.state.metrics = Metrics(core)
    app.state.rate_limit = RateLimit(core.settings.api.rate_limit)
    errors.install(app)
    document_bodies(app, max_text_chars=core.settings.serving.max_text_chars)
    app.add_middleware(BodyLimit)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    for router in (classify, webhooks, feedback, reviews, stats, models, health):
        app.include_router(router.router)
    app.include_router(models.retrain_router)
    for extra in routers:
        app.include_router(extra)
    if core.settings.api.bench_echo:
        app.include_router(bench.router)
    app.mount(MOUNT_PATH, create_admin_app(core, app.state.rate_limit))
    return app
