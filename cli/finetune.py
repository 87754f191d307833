"""``waimai finetune``: cloud fine-tune jobs (Zhipu): launch one, follow them, cancel one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from cli.context import console, errors, friendly_errors, get_core, progress
from core.errors import AppError
from core.store.tables import FineTuneJob, Snapshot
from core.wiring import Core
from retrain.snapshot import snapshot_for
from retrain.trainers.zhipu import ZhipuFineTunes
from retrain.trainers.zhipu_budget import estimate, spent_this_month

app = typer.Typer(help="Cloud fine-tune jobs: launch, follow, cancel.", no_args_is_help=True)


def describe(job: FineTuneJob) -> str:
    name = f" → {job.fine_tuned_model}" if job.fine_tuned_model else ""
    version = f", model version {job.model_version_id}" if job.model_version_id else ""
    why = f": {job.error}" if job.error else ""
    sent = job.external_id or "not sent yet"
    paused = f", {job.last_event}" if job.paused_until and job.finished_at is None else ""
    return f"fine-tune job {job.id} ({sent}) is {job.status}{why}{paused}{name}{version}"


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
    retry: Annotated[
        bool,
        typer.Option(
            "--retry", help="Launch the snapshot again after its job failed or was cancelled"
        ),
    ] = False,
) -> None:
    """Fine-tune a Zhipu model on a snapshot, within the budgets: a snapshot is trained once, and
    tried again after a failed or cancelled job only with --retry."""
    core = get_core()
    tunes = ZhipuFineTunes(core)
    chosen = _snapshot(core, snapshot)
    cost = estimate(chosen, core.settings.zhipu)
    spent, since = spent_this_month(core)
    console.print(
        f"snapshot {chosen.content_hash[:12]}: {cost.describe()}; {spent:.2f} of "
        f"{core.settings.zhipu.monthly_budget:g} yuan spent since {since:%Y-%m-%d}"
    )
    job = tunes.launch(chosen, retry=retry)
    console.print(describe(job))
    if wait:
        console.print("following it (Ctrl-C stops following, not the job: see `finetune status`)")
        with progress() as bar:
            task = bar.add_task(f"job {job.id}: {job.status}", total=None)
            job = asyncio.run(tunes.wait(job, _printer(bar, task)))
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
    if asyncio.run(core.finetunes.listing(unfinished_only=True)):
        try:
            tunes = ZhipuFineTunes(core)
            if wait:
                with progress() as bar:
                    task = bar.add_task("following the unfinished jobs", total=None)
                    asyncio.run(tunes.resume(_printer(bar, task)))
            else:
                for job in asyncio.run(core.finetunes.listing("zhipu", unfinished_only=True)):
                    tunes.refresh(job)
        except AppError as error:
            errors.print(f"[yellow]not refreshed[/yellow] ({error.code}): {error.message}")
    table = Table("id", "job", "status", "snapshot", "cost", "model", "version", "last event")
    for job in asyncio.run(core.finetunes.listing()):
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
    console.print(describe(ZhipuFineTunes(core).cancel(asyncio.run(core.finetunes.find(job)))))


def _snapshot(core: Core, ref: str | None) -> Snapshot:
    if ref is not None:
        return asyncio.run(core.finetunes.find_snapshot(ref))
    with errors.status("taking a snapshot of the training data"):
        return snapshot_for(core)


def _printer(bar: Progress, task: TaskID) -> Callable[[FineTuneJob], None]:
    """Shows each job's status and latest event on the bar, and prints each change once (the
    loss it reports, the step it is at)."""
    last: dict[int | None, str] = {}

    def show(job: FineTuneJob) -> None:
        line = f"job {job.id}: {job.status}" + (f" — {job.last_event}" if job.last_event else "")
        if last.get(job.id) != line:
            last[job.id] = line
            bar.update(task, description=line)
            bar.console.print(line)

    return show


def _status(job: FineTuneJob) -> str:
    """Ours, with Zhipu's own word where it says more (``running (pending)``), a pause, and the
    error."""
    shown: str = job.status
    if job.remote_status and job.remote_status != job.status:
        shown = f"{shown} ({job.remote_status})"
    if job.paused_until is not None and job.finished_at is None:
        shown = f"{shown}, paused until {job.paused_until:%Y-%m-%d %H:%M} UTC"
    if job.attempt > 1:
        shown = f"{shown}, attempt {job.attempt}"
    return f"{shown}: {job.error}" if job.error else shown
