"""``waimai eval``: a model version's figures on the frozen holdout."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.context import console, friendly_errors, get_core, progress
from core.models.evaluation import evaluate


@friendly_errors
def eval_command(
    model: Annotated[
        int | None, typer.Option(help="Model version id [default: the active one]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON")] = False,
) -> None:
    """Accuracy, macro-F1, per-class precision/recall and the confusion matrix on the holdout."""
    core = get_core()
    version = asyncio.run(core.models.get(model) if model is not None else core.models.active())
    texts, labels = asyncio.run(core.dataset.holdout())
    classifier = core.backends.for_version(version)
    with progress() as bar:
        task = bar.add_task(f"evaluating version {version.id}", total=len(texts))
        result = asyncio.run(
            evaluate(classifier, texts, labels, progress=lambda n: bar.advance(task, n))
        )
    result = {
        "model_version": version.id,
        "backend": version.backend,
        "model": version.model_ref,
    } | result
    if as_json:
        console.print_json(json.dumps(result, ensure_ascii=False))
        return
    console.print(_table(result))


def _table(result: dict[str, Any]) -> Table:
    table = Table(
        title=f"model version {result['model_version']} on the holdout ({result['n']:,} reviews)"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("accuracy", f"{result['accuracy']:.4f}")
    table.add_row("macro-F1", f"{result['macro_f1']:.4f}")
    for name, figures in result["per_class"].items():
        table.add_row(
            f"{name} precision / recall", f"{figures['precision']:.4f} / {figures['recall']:.4f}"
        )
    (tn, fp), (fn, tp) = result["confusion"]["matrix"]
    table.add_row("confusion (true neg: neg, pos)", f"{tn:,}, {fp:,}")
    table.add_row("confusion (true pos: neg, pos)", f"{fn:,}, {tp:,}")
    table.add_row(
        "calibration error (ECE)", "–" if result["ece"] is None else f"{result['ece']:.4f}"
    )
    table.add_row("seconds", f"{result['seconds']:.2f}")
    return table
