"""``waimai worker`` (the learning loop's scheduler) and ``waimai retrain`` (one cycle)."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated, Any

import typer

from api.ops import serve_ops
from cli.context import console, errors, friendly_errors, get_core
from cli.models import describe
from core.config import TrainerName
from core.wiring import Core
from retrain.cycle import run_cycle
from retrain.worker import leads, run_worker


@friendly_errors
def worker_command() -> None:
    """Run the scheduler: cron and label-count retrains, requests, fine-tune polling."""
    core = get_core()
    ops = core.settings.ops
    port = f"; metrics and health on {ops.host}:{ops.worker_port}" if ops.worker_port else ""
    console.print(
        f"worker: retrain on '{core.settings.retrain.cron}' ({core.settings.retrain.timezone}) "
        f"and after {core.settings.retrain.label_threshold} new labels{port}; Ctrl-C stops"
    )
    asyncio.run(_until_signal(core))


async def _until_signal(core: Core) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def readiness() -> dict[str, Any]:
        await core.models.active_or_none()  # the store answers
        return {"leader": leads(core)}

    await asyncio.gather(
        run_worker(core, stop),
        serve_ops(core, "worker", core.settings.ops.worker_port, readiness, stop),
    )


@friendly_errors
def retrain_command(
    backend: Annotated[
        TrainerName | None,
        typer.Option(help="Trainer [default: RETRAIN__BACKEND]"),
    ] = None,
    now: Annotated[bool, typer.Option("--now", help="Run here and now, not on the worker")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Retrain even if the data is unchanged")
    ] = False,
) -> None:
    """Retrain: ask the worker to (default), or run one cycle here with --now."""
    core = get_core()
    if not now:
        ticket = asyncio.run(
            core.retrain_requests.request(
                requested_by="cli", reason="waimai retrain", backend=backend
            )
        )
        state = "queued" if ticket.new else "already queued"
        console.print(
            f"retrain request {ticket.request.id} {state}; the worker runs it within minutes"
        )
        return
    with errors.status("snapshot → train → gate"):
        result = asyncio.run(run_cycle(core, backend, force=force))
    if result.version is not None:
        console.print(describe(result.version))
    console.print(f"{result.outcome}: {result.detail} ({result.seconds:.1f} s)")
