"""The "typing…" or "sending a file…" line under the chat's name while the bot works.

aiogram's ``ChatActionSender`` is not used: its background send is waited for on exit however
long it takes (a 429 waited out holds the answer up to a minute), and its failures go unseen.
Here each send has ``SEND_TIMEOUT_S`` and a failure is only logged; the first one is done before
the answer goes out, so the indicator never shows after it (Telegram clears it when the bot
sends a message, but only one sent after the action).
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Literal

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError

log = logging.getLogger(__name__)

Action = Literal["typing", "upload_document", "upload_photo"]
REPEAT_S = 4.5
"""Telegram shows an action for 5 s, or until the bot sends a message."""
SEND_TIMEOUT_S = 2.0


class ChatAction:
    """``async with ChatAction(bot, chat_id, "typing"):`` shows the action while the block runs."""

    def __init__(self, bot: Bot, chat_id: int, action: Action) -> None:
        self._bot = bot
        self._chat_id = chat_id
        self._action = action
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ChatAction:
        self._task = asyncio.create_task(self._show_until_done())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        if self._task is None:
            return
        try:
            await self._task
        except asyncio.CancelledError:
            self._task.cancel()
            raise

    async def _show_until_done(self) -> None:
        while True:
            await self._send()
            try:
                await asyncio.wait_for(self._done.wait(), REPEAT_S)
            except TimeoutError:
                continue
            return

    async def _send(self) -> None:
        try:
            await asyncio.wait_for(
                self._bot.send_chat_action(chat_id=self._chat_id, action=self._action),
                SEND_TIMEOUT_S,
            )
        except (TelegramAPIError, TimeoutError) as error:
            log.info("chat %s: %s not shown: %s", self._chat_id, self._action, error)
