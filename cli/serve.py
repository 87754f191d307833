"""``waimai serve``: the HTTP API, the learning loop's worker and, when TELEGRAM__TOKEN is set,
the Telegram bot (long polling, or in webhook mode the API's ``POST /telegram/webhook``), in one
process and one event loop (what ``make run`` starts). aiogram is imported only when the bot
runs (see cli/bot.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated

import typer
import uvicorn

from cli.bot import api_app, describe
from cli.context import console, exit_cleanly_on_sigterm, friendly_errors, get_core
from core.wiring import Core
from retrain.worker import run_worker

log = logging.getLogger(__name__)


@friendly_errors
def serve_command(
    host: Annotated[str | None, typer.Option(help="Address [default: API__HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: API__PORT]")] = None,
) -> None:
    """Serve the API, run the learning loop and the bot (if configured) until Ctrl-C or SIGTERM."""
    core = get_core()
    console.print(describe(core.settings.telegram))
    exit_cleanly_on_sigterm()
    try:
        asyncio.run(_serve(core, host, port))
    finally:
        core.close()


async def _serve(core: Core, host: str | None, port: int | None) -> None:
    settings = core.settings
    server = uvicorn.Server(
        uvicorn.Config(
            api_app(core),
            host=host or settings.api.host,
            port=port or settings.api.port,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=settings.api.shutdown_timeout_s,
        )
    )
    bot = None
    if settings.telegram.token is not None and settings.telegram.mode == "polling":
        from bot.main import run as run_bot

        # uvicorn owns the signals; the bot stops when the API does. A bot that fails (a token
        # Telegram refuses) is reported and the API serves on.
        bot = asyncio.create_task(run_bot(core, handle_signals=False))
        bot.add_done_callback(_report_bot_failure)
    stop_worker = asyncio.Event()
    worker = asyncio.create_task(run_worker(core, stop_worker))
    try:
        await server.serve()
    finally:
        stop_worker.set()
        with contextlib.suppress(Exception):
            await worker
        if bot is not None:
            bot.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await bot


def _report_bot_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the Telegram bot stopped: %r; the API serves on", task.exception())
