"""``waimai labels``: how human labels resolve — conflicts, and who is trusted."""

from __future__ import annotations

import typer
from rich.table import Table

from cli.context import console, friendly_errors, get_core
from retrain.resolve import Policy, Resolution, training_set

app = typer.Typer(help="Human labels: conflicts and trust.", no_args_is_help=True)


def _resolve() -> Resolution:
    core = get_core()
    return training_set(core.engine, Policy.from_settings(core.settings.retrain))


@app.command()
@friendly_errors
def conflicts() -> None:
    """Texts whose human labels disagree (they keep their dataset label, or stay out)."""
    result = _resolve()
    table = Table("review", "votes", "kept")
    for conflict in result.conflicts:
        votes = ", ".join(f"{actor}: {label}" for actor, label in conflict["votes"].items())
        table.add_row(conflict["text"], votes, conflict["kept"] or "left out")
    console.print(table if result.conflicts else "no conflicts")


@app.command()
@friendly_errors
def trust() -> None:
    """Each labelling actor's trust, accepted and pending labels, and what the caps held back."""
    result = _resolve()
    table = Table("actor", "trust", "held back")
    for actor, value in sorted(result.trust.items(), key=lambda item: -item[1]):
        table.add_row(actor, f"{value:.2f}", str(result.held_back.get(actor, 0)))
    console.print(table)
    console.print(f"accepted human labels: {result.human}; waiting for quorum: {result.pending}")
