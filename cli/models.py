"""``waimai models``: list, promote and roll back model versions."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cli.context import console, friendly_errors, get_core
from core import registry
from core.tables import ModelVersion

app = typer.Typer(help="Model versions: list, promote, roll back.", no_args_is_help=True)


def describe(version: ModelVersion) -> str:
    accuracy = version.metrics.get("accuracy")
    shown = f"holdout accuracy {accuracy:.4f}" if accuracy is not None else "not evaluated"
    name = f"{version.backend}:{version.model_ref}"
    return f"model version {version.id} ({name}) is {version.status}; {shown}"


@app.command("list")
@friendly_errors
def list_() -> None:
    """Every model version, newest first, with its holdout figures."""
    table = Table("id", "backend", "model", "status", "accuracy", "macro-F1", "ECE", "promoted")
    for v in registry.list_versions(get_core().engine):
        m = v.metrics
        table.add_row(
            str(v.id),
            v.backend,
            v.model_ref,
            v.status,
            _fmt(m.get("accuracy")),
            _fmt(m.get("macro_f1")),
            _fmt(m.get("ece")),
            f"{v.promoted_at:%Y-%m-%d %H:%M}" if v.promoted_at else "–",
        )
    console.print(table)


@app.command()
@friendly_errors
def promote(
    version_id: Annotated[int, typer.Argument(help="The model version to make active")],
) -> None:
    """Make a version active now (the current one is retired and stays available for rollback)."""
    console.print(
        describe(registry.promote(get_core().engine, version_id, note="promoted by hand"))
    )


@app.command()
@friendly_errors
def rollback() -> None:
    """Re-activate the version that was active before the current one."""
    console.print(describe(registry.rollback(get_core().engine)))


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "–"
