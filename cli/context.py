"""What every command shares: the core built from settings, and one way to show errors."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from core.config import get_settings
from core.errors import AppError
from core.wiring import Core

console = Console()
errors = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def get_core() -> Core:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return Core(settings)


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM exits with status 0 through the normal clean-up (``finally`` blocks run).

    While uvicorn serves, it takes SIGTERM over, drains the requests in flight, then raises the
    signal again for the handler it found: this one, rather than the default that kills the
    process before the engine is disposed and the worker and bot are stopped.
    """
    signal.signal(signal.SIGTERM, _exit_cleanly)


def _exit_cleanly(_signal: int, _frame: object) -> None:
    raise SystemExit(0)


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Show an AppError or a settings error as one red line and exit 1, without a traceback."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except AppError as error:
            errors.print(f"[red]error[/red] ({error.code}): {error.message}")
            raise typer.Exit(1) from None
        except ValidationError as error:
            errors.print(f"[red]error[/red] (settings): {error}")
            raise typer.Exit(2) from None

    return wrapper


@contextmanager
def progress() -> Iterator[Progress]:
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    ) as bar:
        yield bar
