"""``waimai api``: serve the HTTP API for platforms with uvicorn (and, with TELEGRAM__MODE=webhook,
the Telegram bot's ``POST /telegram/webhook``)."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from cli.bot import api_app
from cli.context import exit_cleanly_on_sigterm, friendly_errors, get_core


@friendly_errors
def api_command(
    host: Annotated[str | None, typer.Option(help="Address [default: API__HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: API__PORT]")] = None,
    access_log: Annotated[bool, typer.Option(help="Log one line per request")] = True,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs) until Ctrl-C or SIGTERM (requests in flight finish)."""
    core = get_core()
    settings = core.settings
    exit_cleanly_on_sigterm()
    try:
        uvicorn.run(
            api_app(core),
            host=host or settings.api.host,
            port=port or settings.api.port,
            access_log=access_log,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=settings.api.shutdown_timeout_s,
        )
    finally:
        core.close()
