"""``waimai finetune``: cloud fine-tune jobs (Zhipu): launch one, follow them, cancel one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

import typer
from rich.table import Table

from cli.context import console, errors, friendly_errors, get_core
from core.errors import AppError
from core.models import finetunes
from core.store.tables import FineTuneJob, Snapshot
from core.wiring import Core
from retrain.snapshot import snapshot_for
from retrain.trainers.zhipu import ZhipuFineTunes, estimate

app = typer.Typer(help="Cloud fine-tune jobs: launch, follow, cancel.", no_args_is_help=True)


def describe(job: FineTuneJob) -> str:
    name = f" → {job.fine_tuned_model}" if job.fine_tuned_model else ""
    version = f", model version {job.model_version_id}" if job.model_version_id else ""
    why = f": {job.error}" if job.error else ""
    sent = job.external_id or "not sent yet"
    return f"fine-tune job {job.id} ({sent}) is {job.status}{why}{name}{version}"


@app.command("zhipu")
@friendly_errors
def zhipu(
    snapshot: Annotated[
        str | None,
        typer.Option(help="Snapshot id or hash prefix [default: a snapshot of the data now]"),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the job until it ends")
    ] = True,
) -> None:
    """Fine-tune a Zhipu model on a snapshot, within the budget; one job per snapshot, ever."""
    core = get_core()
    tunes = ZhipuFineTunes(core)
    chosen = _snapshot(core, snapshot)
    cost = estimate(chosen, core.settings.zhipu)
    console.print(f"snapshot {chosen.content_hash[:12]}: {cost.describe()}")
    job = tunes.launch(chosen)
    console.print(describe(job))
    if wait:
        console.print("following it (Ctrl-C stops following, not the job: see `finetune status`)")
        job = asyncio.run(tunes.wait(job, _printer()))
        console.print(describe(job))


@app.command()
@friendly_errors
def status(
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow every unfinished job until it ends")
    ] = False,
) -> None:
    """Every fine-tune job; the unfinished ones are looked at again first."""
    core = get_core()
    if finetunes.listing(core.engine, unfinished_only=True):
        try:
            tunes = ZhipuFineTunes(core)
            if wait:
                asyncio.run(tunes.resume(_printer()))
            else:
                for job in finetunes.listing(core.engine, "zhipu", unfinished_only=True):
                    tunes.refresh(job)
        except AppError as error:
            errors.print(f"[yellow]not refreshed[/yellow] ({error.code}): {error.message}")
    table = Table("id", "job", "status", "snapshot", "cost", "model", "version", "last event")
    for job in finetunes.listing(core.engine):
        table.add_row(
            str(job.id),
            job.external_id or "–",
            _status(job),
            job.snapshot[:12],
            f"{job.estimated_cost:.2f}" if job.estimated_cost is not None else "–",
            job.fine_tuned_model or "–",
            str(job.model_version_id or "–"),
            job.last_event or "–",
        )
    console.print(table)


@app.command()
@friendly_errors
def cancel(
    job: Annotated[str, typer.Argument(help="The job: our id or Zhipu's (ftjob-...)")],
) -> None:
    """Cancel a job that has not ended."""
    core = get_core()
    console.print(describe(ZhipuFineTunes(core).cancel(finetunes.find(core.engine, job))))


def _snapshot(core: Core, ref: str | None) -> Snapshot:
    if ref is not None:
        return finetunes.find_snapshot(core.engine, ref)
    with errors.status("taking a snapshot of the training data"):
        return snapshot_for(core)


def _printer() -> Callable[[FineTuneJob], None]:
    last: dict[int | None, str] = {}

    def show(job: FineTuneJob) -> None:
        line = f"job {job.id}: {job.status}" + (f" — {job.last_event}" if job.last_event else "")
        if last.get(job.id) != line:
            last[job.id] = line
            console.print(line)

    return show


def _status(job: FineTuneJob) -> str:
    """Ours, with Zhipu's own word where it says more (``running (pending)``), and the error."""
    shown: str = job.status
    if job.remote_status and job.remote_status != job.status:
        shown = f"{shown} ({job.remote_status})"
    return f"{shown}: {job.error}" if job.error else shown
