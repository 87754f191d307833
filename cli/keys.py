"""``waimai keys``: API keys for platforms (create, list, rotate, revoke) and their webhook
secrets."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from cli.context import console, errors, friendly_errors, get_core
from core.store.tables import ClientRole

app = typer.Typer(help="API keys for platforms and their webhook secrets.", no_args_is_help=True)


@app.command()
@friendly_errors
def create(
    name: Annotated[str, typer.Option("--name", help="The client's name (its tenant)")],
    role: Annotated[
        ClientRole, typer.Option(help="admin keys may also manage model versions")
    ] = ClientRole.CLIENT,
) -> None:
    """Create a client: its API key and webhook secret are printed this once, never again."""
    issued = get_core().clients.create(name, role)
    console.print(f"client {issued.client.name!r} ({issued.client.role}) created")
    console.print(f"API key:        {issued.key}", soft_wrap=True)
    console.print(f"webhook secret: {issued.webhook_secret}", soft_wrap=True)
    errors.print(
        "[yellow]Store both now: they are not shown again (only a hash of the key is kept)."
    )


@app.command("list")
@friendly_errors
def list_() -> None:
    """Every client with its role and state (never a key)."""
    table = Table("name", "role", "created", "state", "webhook secrets")
    for client in get_core().clients.list_clients():
        table.add_row(
            client.name,
            client.role,
            f"{client.created_at:%Y-%m-%d %H:%M}",
            f"revoked {client.revoked_at:%Y-%m-%d %H:%M}" if client.revoked_at else "active",
            str(len(client.webhook_secrets)),
        )
    console.print(table)


@app.command()
@friendly_errors
def revoke(name: Annotated[str, typer.Argument(help="The client whose key stops working")]) -> None:
    """Revoke a client's key (a running API refuses it within API__KEY_CACHE_S seconds)."""
    get_core().clients.revoke(name)
    console.print(f"client {name!r} revoked")


@app.command()
@friendly_errors
def rotate(
    name: Annotated[str, typer.Argument(help="The client")],
    grace_hours: Annotated[
        float,
        typer.Option(min=0, help="How long the replaced key still works (0: stops at once)"),
    ] = 24.0,
) -> None:
    """A new API key for the same client, printed once; the replaced one works for the grace."""
    key = get_core().clients.rotate_key(name, timedelta(hours=grace_hours))
    console.print(f"new API key: {key}", soft_wrap=True)
    if grace_hours:
        errors.print(f"The previous key is accepted for {grace_hours:g} more hour(s).")
    else:
        errors.print("The previous key is refused from now on.")


@app.command("rotate-secret")
@friendly_errors
def rotate_secret(name: Annotated[str, typer.Argument(help="The client")]) -> None:
    """A new webhook secret, printed once; the previous one stays valid until the next rotation."""
    secret = get_core().clients.rotate_webhook_secret(name)
    console.print(f"new webhook secret: {secret}", soft_wrap=True)
