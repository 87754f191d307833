"""``waimai classify``: classify reviews given as arguments, or typed one per line."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from cli.context import console, errors, friendly_errors, get_core
from core.classify.service import Classified, ReviewInput
from core.errors import AppError
from core.store.tables import Source
from core.wiring import Core


@friendly_errors
def classify_command(
    texts: Annotated[
        list[str] | None, typer.Argument(help="Reviews to classify; none: read them one per line")
    ] = None,
) -> None:
    """Classify reviews with the active model (each one is stored with its prediction)."""
    core = get_core()
    if texts:
        for result in _classify(core, texts):
            console.print(render(result))
        return
    interactive = sys.stdin.isatty()
    if interactive:
        console.print("Type a review and press Enter (Ctrl-D to quit).")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            (result,) = _classify(core, [line])
        except AppError as error:
            if not interactive:
                raise
            errors.print(f"[red]error[/red] ({error.code}): {error.message}")
            continue
        console.print(render(result))


def _classify(core: Core, texts: list[str]) -> list[Classified]:
    items = [ReviewInput(text=t) for t in texts]
    return asyncio.run(core.classification.classify(items, source=Source.CLI, tenant="cli"))


def render(result: Classified) -> str:
    verdict = result.verdict
    confidence = "" if verdict.confidence is None else f"  置信度 {verdict.confidence:.0%}"
    fallback = "  (备用模型)" if result.fallback else ""
    return f"{verdict.label.zh} ({verdict.label.api_name}){confidence}{fallback}  ← {result.text}"
