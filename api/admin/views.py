"""The operator page's Jinja2 templates, and the filters that write its figures."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fastapi.templating import Jinja2Templates

from core.store.tables import as_utc

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def figure(value: float | None, digits: int = 4) -> str:
    """A holdout figure as the gate writes it (0.9123), or a dash when there is none."""
    return "—" if value is None else f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def moment(value: datetime | None) -> str:
    return "—" if value is None else f"{as_utc(value):%Y-%m-%d %H:%M} UTC"


def count(value: int) -> str:
    return f"{value:,}"


templates.env.filters.update(figure=figure, percent=percent, moment=moment, count=count)
templates.env.trim_blocks = True
templates.env.lstrip_blocks = True
