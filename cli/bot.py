"""``waimai bot``: run the merchants' Telegram bot; ``waimai bot invite``: an invite link.

aiogram is imported by the commands that use it: it takes seconds to import, and every other
``waimai`` command would pay for it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from cli.context import console, errors, friendly_errors, get_core
from core.config import TelegramSettings

app = typer.Typer(
    help="Run the merchants' Telegram bot (long polling); `waimai bot invite` for invite links.",
    invoke_without_command=True,
)

BOT_OFF = (
    "TELEGRAM__TOKEN is not set, so the Telegram bot is off. Get a token from @BotFather, "
    "put TELEGRAM__TOKEN=... in .env, and run `waimai bot` again."
)


def describe(settings: TelegramSettings) -> str:
    """One line on how the bot runs, for the logs of `waimai bot` and `waimai serve`."""
    if settings.token is None:
        return "Telegram bot: off (TELEGRAM__TOKEN is not set)"
    return (
        f"Telegram bot: long polling {settings.api_base} "
        f"(access: {settings.access}, {len(settings.admins)} admin(s))"
    )


@app.callback()
@friendly_errors
def bot(context: typer.Context) -> None:
    """Run the bot by long polling until Ctrl-C."""
    if context.invoked_subcommand is not None:
        return
    core = get_core()
    settings = core.settings.telegram
    if settings.token is None:
        errors.print(f"[red]error[/red]: {BOT_OFF}")
        raise typer.Exit(2)
    console.print(describe(settings))
    from bot.main import run

    try:
        asyncio.run(run(core))
    finally:
        core.engine.dispose()


@app.command()
@friendly_errors
def invite(
    by: Annotated[str, typer.Option(help="Who the invite is recorded as created by")] = "cli",
) -> None:
    """Create a one-use invite and print its deep link (t.me/<bot>?start=<code>)."""
    core = get_core()
    settings = core.settings.telegram
    if settings.token is None and not settings.bot_username:
        errors.print(f"[red]error[/red]: {BOT_OFF} (or set TELEGRAM__BOT_USERNAME)")
        raise typer.Exit(2)
    from aiogram.exceptions import TelegramAPIError

    from bot.main import BotNotConfigured, bot_username

    try:
        username = asyncio.run(bot_username(settings))
    except (TelegramAPIError, BotNotConfigured) as error:
        errors.print(
            f"[red]error[/red]: could not ask Telegram for the bot's name ({error}); "
            "set TELEGRAM__BOT_USERNAME to work offline"
        )
        raise typer.Exit(1) from None
    created = core.merchants.create_invite(created_by=by)
    if settings.access != "invite":
        errors.print(
            f"note: TELEGRAM__ACCESS is {settings.access}; invite codes matter only in invite mode"
        )
    console.print(f"https://t.me/{username}?start={created.code}", soft_wrap=True)
