"""``waimai data``: fetch, check and split the dataset, write the training JSONL, fill the store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.context import console, friendly_errors, get_core, progress
from core.models import dataset

app = typer.Typer(help="The dataset: fetch, split, write JSONL, import.", no_args_is_help=True)


@app.command()
@friendly_errors
def prepare(
    source: Annotated[
        str | None,
        typer.Option(
            help="Path or URL of waimai_10k.csv [default: the local copies, then the public URL]"
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for train.jsonl and test.jsonl [default: DATA__DIR]")
    ] = None,
) -> None:
    """Split waimai_10k.csv 70/30 (the canonical split), write chat JSONL and import the rows."""
    core = get_core()
    with progress() as bar:
        task = bar.add_task("preparing the dataset", total=len(dataset.STEPS))

        def step(name: str) -> None:
            bar.update(task, description=name, completed=dataset.STEPS.index(name))

        report = asyncio.run(
            core.dataset.prepare(
                source or core.settings.data.source,
                out or core.settings.data.dir,
                timeout_s=core.settings.data.download_timeout_s,
                on_step=step,
            )
        )
    table = Table(title="data prepared", show_header=False)
    table.add_row("source", report.origin)
    table.add_row(
        "sha256", report.sha256 + ("" if report.canonical else "  (not the canonical file)")
    )
    table.add_row("encoding", report.encoding)
    table.add_row("rows", f"{report.rows:,}")
    table.add_row("train / test", f"{report.train:,} / {report.test:,}")
    table.add_row("skipped (empty review)", f"{len(report.skipped_empty):,}")
    table.add_row("newly imported", f"{report.imported:,}")
    for path, digest in report.files.items():
        table.add_row(path, digest)
    console.print(table)
