"""``waimai train``: train a new model version."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from cli.context import console, errors, friendly_errors, get_core
from cli.models import describe
from retrain.cycle import run_cycle

app = typer.Typer(help="Train a new model version.", no_args_is_help=True)


@app.command("local")
@friendly_errors
def train_local(
    if_none_active: Annotated[
        bool, typer.Option("--if-none-active", help="Do nothing when a model is already active")
    ] = False,
) -> None:
    """Train the embedded CPU model on the train split plus accepted human labels."""
    core = get_core()
    if if_none_active and asyncio.run(core.models.has_active()):
        console.print("a model is already active; nothing to train")
        return
    with errors.status("training the local model and comparing it with the active one"):
        result = asyncio.run(run_cycle(core, "local", force=True))
    if result.version is not None:
        console.print(describe(result.version))
    console.print(f"{result.outcome}: {result.detail}")
