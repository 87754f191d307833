"""``waimai api``: serve the HTTP API for platforms with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from api.main import create_app
from cli.context import friendly_errors, get_core


@friendly_errors
def api_command(
    host: Annotated[str | None, typer.Option(help="Address [default: API__HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: API__PORT]")] = None,
    access_log: Annotated[bool, typer.Option(help="Log one line per request")] = True,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs) until Ctrl-C."""
    core = get_core()
    settings = core.settings
    try:
        uvicorn.run(
            create_app(core),
            host=host or settings.api.host,
            port=port or settings.api.port,
            access_log=access_log,
            log_level=settings.log_level.lower(),
        )
    finally:
        core.engine.dispose()
