"""``waimai labels``: how human labels resolve — conflicts, and each labeller's standing."""

from __future__ import annotations

import asyncio

import typer
from rich.table import Table

from cli.context import console, friendly_errors, get_core
from core.labels.resolve import Resolution
from core.labels.rules import FateStatus

app = typer.Typer(help="Human labels: conflicts and trust.", no_args_is_help=True)


def _resolve() -> Resolution:
    return asyncio.run(get_core().resolver.resolve())


@app.command()
@friendly_errors
def conflicts() -> None:
    """Texts whose labellers disagree (they keep their dataset label, or stay out of the shared
    model; each label still teaches its labeller's own model)."""
    result = _resolve()
    table = Table("review", "votes", "kept")
    for conflict in result.conflicts:
        votes = ", ".join(f"{who}: {label}" for who, label in conflict["votes"].items())
        table.add_row(conflict["text"], votes, conflict["kept"] or "left out")
    console.print(table if result.conflicts else "no conflicts")


@app.command()
@friendly_errors
def trust() -> None:
    """Each labelling tenant: its labels and what became of them, how many could be checked
    against independent evidence (an admin, the dataset, other tenants), its trust, and whether
    it is flagged (⚑: its labels teach its own model only)."""
    result = _resolve()
    if not result.labellers and not result.fates:
        console.print("no human labels yet")
        return
    table = Table(
        "tenant",
        "labels",
        "accepted",
        "pending",
        "held back",
        "checked (agreed)",
        "trust",
        "flagged",
    )
    for figures in sorted(result.labellers.values(), key=lambda f: (-f.labels, f.tenant)):
        table.add_row(
            figures.tenant,
            str(figures.labels),
            str(figures.accepted),
            str(figures.pending),
            str(figures.held_back),
            f"{figures.checked} ({figures.agreed})",
            f"{figures.trust:.2f}",
            "⚑" if figures.flagged else "",
        )
    console.print(table)
    fates = result.fates
    counted = sum(fates.values())
    console.print(
        f"labels {counted + result.superseded}: "
        f"accepted {fates[FateStatus.ACCEPTED]}, pending {fates[FateStatus.PENDING]}, "
        f"held back {fates[FateStatus.HELD_BACK]}, superseded {result.superseded}"
    )
    by_admins = counted - sum(f.labels for f in result.labellers.values())
    if by_admins:
        console.print(f"admins' latest labels among them (not in the table): {by_admins}")
    flagged = result.flagged
    console.print("flagged: " + (", ".join(flagged) if flagged else "none"))
