"""``waimai db``: the store's schema."""

from __future__ import annotations

import typer

from cli.context import console, friendly_errors, get_core
from migrations import upgrade_database

app = typer.Typer(help="The store's schema.", no_args_is_help=True)


@app.command()
@friendly_errors
def upgrade() -> None:
    """Apply every pending migration (safe to run at each start)."""
    database = upgrade_database(get_core().settings.db)
    console.print(f"database is up to date ({database})")
