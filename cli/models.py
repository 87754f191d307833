"""``waimai models``: list, promote, roll back, add and report on model versions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.context import console, errors, friendly_errors, get_core
from core.errors import InvalidInput
from core.store.tables import ModelVersion, saved_id
from retrain.registration import add_model

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
    for v in asyncio.run(get_core().models.all()):
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
    force: Annotated[
        bool, typer.Option("--force", help="Override the holdout gate (recorded on the version)")
    ] = False,
) -> None:
    """Make a version active if the holdout gate lets it in, as it does the loop's candidates
    (the current one is retired and stays available for rollback).

    A vLLM adapter is first loaded into the server and asked the canary reviews.
    """
    core = get_core()
    with errors.status(f"judging version {version_id} on the holdout"):
        promoted = asyncio.run(core.gate.promote(version_id, by="cli", force=force))
    console.print(describe(promoted))


@app.command()
@friendly_errors
def rollback() -> None:
    """Re-activate the version that was active before the current one."""
    console.print(describe(asyncio.run(get_core().models.rollback())))


@app.command()
@friendly_errors
def add(
    backend: Annotated[str, typer.Argument(help="The backend that serves it: zhipu")],
    model: Annotated[
        str | None,
        typer.Argument(help="Its model code (default: the ZHIPU__MODEL setting)"),
    ] = None,
    job: Annotated[
        int | None,
        typer.Option(
            help="The fine-tune job whose model this deployment serves: the version records "
            "the job's snapshot and loss curves"
        ),
    ] = None,
    judge: Annotated[
        bool,
        typer.Option(
            "--gate/--no-gate",
            help="Send it through the promotion gate now: measured on the holdout against the "
            "active model, promoted only if not worse",
        ),
    ] = True,
) -> None:
    """Register a model a remote backend serves as a candidate, and send it through the
    promotion gate like any candidate: a Zhipu base model, a LoRA fine-tune, or the model code
    of a deployment (a full fine-tune answers only once deployed in Zhipu's console)."""
    if backend != "zhipu":
        raise InvalidInput(f"`models add` knows the zhipu backend, not {backend!r}")
    core = get_core()
    name = model or core.settings.zhipu.model
    if job is not None:
        note = f"deployment {name} of the model of Zhipu fine-tune job {job}"
        version = asyncio.run(core.finetunes.register_deployed(job, name, note))
    else:
        version = asyncio.run(add_model(core, backend, name, evaluate_it=False))
    console.print(describe(version))
    if judge:
        with errors.status("measuring it and the active model on the holdout"):
            decision = asyncio.run(core.gate.judge(version))
        console.print(f"{'promoted' if decision.promote else 'not promoted'}: {decision.reason}")
        console.print(describe(asyncio.run(core.models.get(saved_id(version)))))


@app.command()
@friendly_errors
def report(
    version_id: Annotated[
        int | None, typer.Argument(help="The model version [default: the active one]")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the PNG")] = Path("report.png"),
) -> None:
    """A version's report as a picture: its training curves, the holdout accuracy and macro-F1
    of every version with the gate's decisions, its confusion matrix and reliability diagram."""
    with errors.status("drawing the report"):
        png = asyncio.run(get_core().reports.png(version_id))
    out.write_bytes(png)
    console.print(f"report written to {out} ({len(png) // 1024} KiB)")


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "–"
