"""``waimai bot``: run the merchants' Telegram bot; ``waimai bot invite``: an invite link;
``waimai bot set-webhook`` / ``delete-webhook``: switch Telegram to webhook mode and back.

aiogram is imported by the commands that use it: it takes seconds to import, and every other
``waimai`` command would pay for it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.context import console, errors, friendly_errors, get_core
from core.config import TelegramSettings
from core.wiring import Core

if TYPE_CHECKING:
    from fastapi import FastAPI

app = typer.Typer(
    help="Run the merchants' Telegram bot (long polling); `waimai bot invite` for invite links.",
    invoke_without_command=True,
)

BOT_OFF = (
    "TELEGRAM__TOKEN is not set, so the Telegram bot is off. Get a token from @BotFather, "
    "put TELEGRAM__TOKEN=... in .env, and run `waimai bot` again."
)
WEBHOOK_MODE = (
    "TELEGRAM__MODE is webhook: Telegram posts updates to the API (POST /telegram/webhook), so "
    "`waimai serve` or `waimai api` serves the bot, and `waimai bot` does not poll (Telegram "
    "refuses polling while a webhook is set). To poll instead: TELEGRAM__MODE=polling and "
    "`waimai bot delete-webhook`."
)


def describe(settings: TelegramSettings) -> str:
    """One line on how the bot runs, for the logs of `waimai bot` and `waimai serve`."""
    if settings.token is None:
        return "Telegram bot: off (TELEGRAM__TOKEN is not set)"
    how = f"long polling {settings.api_base}"
    if settings.mode == "webhook":
        how = "webhook, served by the API at POST /telegram/webhook"
    return f"Telegram bot: {how} (access: {settings.access}, {len(settings.admins)} admin(s))"


def serves_webhook(settings: TelegramSettings) -> bool:
    return settings.token is not None and settings.mode == "webhook"


def api_app(core: Core) -> FastAPI:
    """The API app; in webhook mode with the bot's route and lifespan mounted on it."""
    from api.main import create_app

    if not serves_webhook(core.settings.telegram):
        return create_app(core)
    from bot.webhook import TelegramWebhook

    webhook = TelegramWebhook.create(core)
    return create_app(core, routers=[webhook.router()], lifespans=[webhook.lifespan])


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
    if settings.mode == "webhook":
        errors.print(f"[red]error[/red]: {WEBHOOK_MODE}")
        raise typer.Exit(2)
    console.print(describe(settings))
    try:
        asyncio.run(_poll(core))
    finally:
        core.close()


async def _poll(core: Core) -> None:
    """Poll until a signal stops the bot, with the ops port beside it (``OPS__BOT_PORT``)."""
    from api.ops import serve_ops
    from bot.main import run

    async def readiness() -> dict[str, Any]:
        version = await core.classification.ready()
        return {"model_version": version.id, "backend": version.backend}

    stop = asyncio.Event()
    ops = asyncio.create_task(serve_ops(core, "bot", core.settings.ops.bot_port, readiness, stop))
    try:
        await run(core)
    finally:
        stop.set()
        await ops


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


@app.command("set-webhook")
@friendly_errors
def set_webhook(
    url: Annotated[
        str, typer.Argument(help="Where Telegram posts, e.g. https://example.com/telegram/webhook")
    ],
    drop_pending_updates: Annotated[
        bool, typer.Option(help="Drop the updates Telegram holds for the bot")
    ] = False,
) -> None:
    """Register the API's POST /telegram/webhook with Telegram (webhook mode)."""
    core = get_core()
    settings = core.settings.telegram
    _needs_a_token(settings)
    if settings.webhook_secret is None:
        errors.print(
            "[red]error[/red]: TELEGRAM__WEBHOOK_SECRET is not set; Telegram sends it with every "
            "update so that the API can tell Telegram from anyone else"
        )
        raise typer.Exit(2)
    from aiogram.exceptions import TelegramAPIError

    from bot.webhook import set_webhook as register

    try:
        info = asyncio.run(register(core, url, drop_pending_updates=drop_pending_updates))
    except TelegramAPIError as error:
        errors.print(f"[red]error[/red]: Telegram refused the webhook: {error}")
        raise typer.Exit(1) from None
    finally:
        core.close()
    allowed = ", ".join(info.allowed_updates or []) or "Telegram's default"
    console.print(
        f"Webhook set: {info.url} (updates: {allowed}; {info.pending_update_count} pending)",
        soft_wrap=True,
    )
    if settings.mode != "webhook":
        errors.print(
            "note: TELEGRAM__MODE is polling; set TELEGRAM__MODE=webhook so that the API serves "
            "the webhook (polling is refused while it is set)"
        )


@app.command("delete-webhook")
@friendly_errors
def delete_webhook(
    drop_pending_updates: Annotated[
        bool, typer.Option(help="Drop the updates Telegram holds for the bot")
    ] = False,
) -> None:
    """Remove the webhook, so that the bot can poll again (TELEGRAM__MODE=polling)."""
    settings = get_core().settings.telegram
    _needs_a_token(settings)
    from aiogram.exceptions import TelegramAPIError

    from bot.webhook import delete_webhook as remove

    try:
        asyncio.run(remove(settings, drop_pending_updates=drop_pending_updates))
    except TelegramAPIError as error:
        errors.print(f"[red]error[/red]: could not remove the webhook: {error}")
        raise typer.Exit(1) from None
    console.print("Webhook removed; with TELEGRAM__MODE=polling, `waimai bot` polls again.")


def _needs_a_token(settings: TelegramSettings) -> None:
    if settings.token is None:
        errors.print(f"[red]error[/red]: {BOT_OFF}")
        raise typer.Exit(2)
