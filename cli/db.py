"""``waimai db``: the store's schema."""

from __future__ import annotations

import typer

from cli.context import console, friendly_errors, get_core
from migrations import upgrade_schema

app = typer.Typer(help="The store's schema.", no_args_is_help=True)


@app.command()
@friendly_errors
def upgrade() -> None:
    """Apply every pending migration (safe to run at each start)."""
    core = get_core()
    upgrade_schema(core.engine)
    console.print(
        f"database is up to date ({core.engine.url.render_as_string(hide_password=True)})"
    )
