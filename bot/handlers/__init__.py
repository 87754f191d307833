"""One router a module; built fresh for each dispatcher."""

from __future__ import annotations

from aiogram import Router

from bot.handlers import admin, batch, feedback, reviews, start, stats


def routers() -> list[Router]:
    """In order of precedence: the reviews router takes any message or press the others leave."""
    return [
        start.router(),
        admin.router(),
        stats.router(),
        feedback.router(),
        batch.router(),
        reviews.router(),
    ]
