"""``waimai models``: list, promote and roll back model versions."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from cli.context import console, errors, friendly_errors, get_core
from core.errors import InvalidInput
from core.models import registry
from core.store.tables import ModelVersion
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
    """Make a version active now (the current one is retired and stays available for rollback).

    A vLLM adapter is first loaded into the server and asked the canary reviews.
    """
    core = get_core()
    if registry.get(core.engine, version_id).backend == "vllm":
        from retrain.promotion import promote_adapter

        promoted = asyncio.run(promote_adapter(core, version_id, note="promoted by hand"))
    else:
        promoted = registry.promote(core.engine, version_id, note="promoted by hand")
    console.print(describe(promoted))


@app.command()
@friendly_errors
def rollback() -> None:
    """Re-activate the version that was active before the current one."""
    console.print(describe(registry.rollback(get_core().engine)))


@app.command()
@friendly_errors
def add(
    backend: Annotated[str, typer.Argument(help="The backend that serves it: zhipu")],
    model: Annotated[
        str | None, typer.Argument(help="Its name (default: the ZHIPU__MODEL setting)")
    ] = None,
    evaluate: Annotated[bool, typer.Option(help="Measure it on the holdout now")] = False,
) -> None:
    """Register a model a remote backend serves already (a Zhipu base or fine-tuned model)."""
    if backend != "zhipu":
        raise InvalidInput(f"`models add` knows the zhipu backend, not {backend!r}")
    core = get_core()
    with errors.status("registering" + (" and evaluating it on the holdout" if evaluate else "")):
        version = asyncio.run(
            add_model(core, backend, model or core.settings.zhipu.model, evaluate_it=evaluate)
        )
    console.print(describe(version))


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "–"
