"""The per-chat throttle: at most ``TELEGRAM__THROTTLE_MESSAGES`` updates a chat is handled in
any ``TELEGRAM__THROTTLE_WINDOW_S``. Nothing over the limit is dropped without a word:

- a message over it waits in the chat's line and is handled when its turn comes, in order (a
  notice says so when a line starts); a line holds ``TELEGRAM__QUEUE_MESSAGES`` messages;
- a message that finds the line full is not taken: one notice (``notice_delay_s`` after the
  first of them, for all that came meanwhile) names each by its first words and offers the file
  route;
- a button press over the limit is answered with an alert to try again (it cannot wait: its
  spinner would run for minutes).

A waiting update is held in the store until handled: in polling mode by ``StoredBacklog`` (and
handled again at the next start if the process stopped first), in webhook mode by the webhook's
own claim, which a sweep takes again (bot/webhook.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Chat, Message, TelegramObject, Update, User
from pydantic import ValidationError

from bot import texts
from bot.middlewares import Handler, reply
from core.delivery.telegram_updates import TelegramUpdates

log = logging.getLogger(__name__)

NOTICE_DELAY_S = 1.0
QUOTE_CHARS = 30
MAX_MESSAGE_CHARS = 4096
RESUME_ATTEMPTS = 3
"""A held update handled this many times without being released (it kills its handler, or the
process) is given up and logged."""


class Backlog(Protocol):
    """Where the updates waiting in a line are held until handled."""

    async def hold(self, update: Update) -> None: ...
    async def release(self, update_id: int) -> None: ...


class NoBacklog:
    """Webhook mode: the webhook's claim already holds every update until it is handled."""

    async def hold(self, update: Update) -> None:
        return None

    async def release(self, update_id: int) -> None:
        return None


class StoredBacklog:
    """Polling mode: Telegram forgets an update once polling moves past it, so a waiting one is
    stored (table ``telegram_update``) and marked handled when done; one still held when the
    bot starts (it stopped while the update waited) is handled then."""

    def __init__(self, updates: TelegramUpdates) -> None:
        self._updates = updates
        self._resumed: set[asyncio.Task[Any]] = set()

    async def hold(self, update: Update) -> None:
        await self._updates.claim(
            update.update_id, update.model_dump_json(by_alias=True, exclude_none=True)
        )

    async def release(self, update_id: int) -> None:
        await self._updates.handled(update_id)

    async def resume(self, bot: Bot, dispatcher: Dispatcher) -> int:
        """Handle the updates an earlier run held but never handled; how many."""
        held = await self._updates.take_stalled(timedelta(0), RESUME_ATTEMPTS)
        for each in held:
            try:
                update = Update.model_validate_json(each.payload, context={"bot": bot})
            except ValidationError:
                log.exception("held update %s is not an Update; dropped", each.update_id)
                await self._updates.handled(each.update_id)
                continue
            log.info("update %s waited in a line when the bot stopped; handling it", each.update_id)
            task = asyncio.create_task(self._handle_resumed(bot, dispatcher, update))
            self._resumed.add(task)
            task.add_done_callback(self._resumed.discard)
        return len(held)

    async def _handle_resumed(self, bot: Bot, dispatcher: Dispatcher, update: Update) -> None:
        await dispatcher.feed_update(bot, update)
        await self._updates.handled(update.update_id)


@dataclass
class _Line:
    """A chat's turns: the times handed out within the last window, and those ahead."""

    turns: deque[float] = field(default_factory=deque)
    waiting: int = 0
    refused: list[str] = field(default_factory=list)
    """What each message not taken since the last notice said (its first words)."""
    notice: asyncio.Task[None] | None = None


class Throttle(BaseMiddleware):
    def __init__(
        self,
        limit: int,
        window_s: float,
        queue: int,
        backlog: Backlog | None = None,
        *,
        notice_delay_s: float = NOTICE_DELAY_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._limit = limit
        self._window_s = window_s
        self._queue = queue
        self._backlog = backlog or NoBacklog()
        self._notice_delay_s = notice_delay_s
        self._clock = clock
        self._sleep = sleep
        self._lines: dict[int, _Line] = {}
        self._waiting: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Event()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        user: User | None = data.get("event_from_user")
        if user is None:
            return await handler(event, data)
        chat: Chat | None = data.get("event_chat")
        chat_id = chat.id if chat is not None else user.id
        line = self._line(chat_id)
        now = self._clock()
        while line.turns and line.turns[0] <= now - self._window_s:
            line.turns.popleft()
        turn = now if len(line.turns) < self._limit else line.turns[-self._limit] + self._window_s
        if turn <= now:
            line.turns.append(now)
            return await handler(event, data)
        lang: texts.Lang = data["lang"]
        if event.message is None:
            seconds = math.ceil(turn - now)
            await reply(event, texts.t("press_throttled", lang, seconds=seconds))
            return None
        if line.waiting >= self._queue:
            self._refuse(line, chat_id, event.message, data["bot"], lang)
            return None
        line.turns.append(turn)
        await self._wait_in_line(line, event, turn, lang)
        return await self._handle_held(handler, event, data)

    async def close(self) -> None:
        """Stop the updates waiting in lines (they stay held) and send the pending notices now."""
        self._closing.set()
        waiting = list(self._waiting)
        for task in waiting:
            task.cancel()
        notices = [line.notice for line in self._lines.values() if line.notice is not None]
        await asyncio.gather(*waiting, *notices, return_exceptions=True)

    def _line(self, chat_id: int) -> _Line:
        if len(self._lines) > 10_000:
            horizon = self._clock() - self._window_s
            for idle in [k for k, v in self._lines.items() if _idle(v, horizon)]:
                del self._lines[idle]
        return self._lines.setdefault(chat_id, _Line())

    async def _wait_in_line(
        self, line: _Line, event: Update, turn: float, lang: texts.Lang
    ) -> None:
        line.waiting += 1
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            await self._backlog.hold(event)
            if line.waiting == 1:
                notice = texts.t(
                    "queued",
                    lang,
                    limit=self._limit,
                    window=f"{self._window_s:g}",
                    seconds=math.ceil(turn - self._clock()),
                )
                await reply(event, notice)
            await self._sleep(max(0.0, turn - self._clock()))
        finally:
            line.waiting -= 1
            self._waiting.discard(task)

    async def _handle_held(self, handler: Handler, event: Update, data: dict[str, Any]) -> Any:
        """Run the handler; release the update unless cancelled (a stop keeps it held)."""
        cancelled = False
        try:
            return await handler(event, data)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            if not cancelled:
                await self._backlog.release(event.update_id)

    def _refuse(
        self, line: _Line, chat_id: int, message: Message, bot: Bot, lang: texts.Lang
    ) -> None:
        line.refused.append(_first_words(message, lang))
        if line.notice is None:
            line.notice = asyncio.create_task(self._tell_refused(line, chat_id, bot, lang))

    async def _tell_refused(self, line: _Line, chat_id: int, bot: Bot, lang: texts.Lang) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self._notice_delay_s)
        refused, line.refused, line.notice = line.refused, [], None
        for text in refusal_notices(refused, self._queue, lang):
            try:
                await bot.send_message(chat_id, text)
            except TelegramAPIError:
                log.exception(
                    "chat %s was not told of %s messages not taken", chat_id, len(refused)
                )
                return


def refusal_notices(refused: list[str], queue: int, lang: texts.Lang) -> list[str]:
    """The messages that name each message not taken, numbered, within Telegram's length; the
    first has the heading, the last the file route."""
    heading = texts.t("not_taken", lang, queue=queue, count=len(refused))
    hint = texts.t("not_taken_hint", lang)
    notices: list[list[str]] = [[heading]]
    size = len(heading)
    for number, words in enumerate(refused, 1):
        item = f"{number}. {words}"
        if size + 1 + len(item) + 2 + len(hint) > MAX_MESSAGE_CHARS:
            notices.append([texts.t("not_taken_more", lang)])
            size = len(notices[-1][0])
        notices[-1].append(item)
        size += 1 + len(item)
    notices[-1].extend(["", hint])
    return ["\n".join(lines) for lines in notices]


def _first_words(message: Message, lang: texts.Lang) -> str:
    if message.text or message.caption:
        return texts.quoted(message.text or message.caption or "", QUOTE_CHARS)
    if message.document is not None:
        return f"📎 {message.document.file_name or 'file'}"
    return texts.t("not_text_message", lang)


def _idle(line: _Line, horizon: float) -> bool:
    return not line.waiting and line.notice is None and all(t <= horizon for t in line.turns)
