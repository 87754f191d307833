"""A fake Telegram Bot API server on loopback, for the real aiogram Bot to talk to.

It implements getMe, getUpdates (long polling with offsets; 409 Conflict while a webhook is
set, as Telegram does), sendMessage, editMessageText, editMessageReplyMarkup,
answerCallbackQuery, sendDocument (multipart), getFile, setWebhook, deleteWebhook,
getWebhookInfo and the file download path ``/file/bot<token>/<path>``; records every call; and
lets a test play the users: messages, button presses (whose message carries a real, non-zero
date: ``"date": 0`` parses as an inaccessible message), documents, and 429s with
``retry_after``. In webhook mode a test posts the updates itself (``text_update`` builds one).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456789:TEST-token_for-the-fake-server"
INT_FIELDS = {
    "chat_id",
    "message_id",
    "offset",
    "limit",
    "timeout",
    "reply_to_message_id",
    "max_connections",
}
JSON_FIELDS = {"reply_markup", "allowed_updates", "reply_parameters", "entities"}
BOOL_FIELDS = {"show_alert", "disable_notification", "drop_pending_updates"}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int
    result: Any
    """What the method returned (None for an error)."""
    at: float = field(default_factory=time.monotonic)

    def button(self, row: int = 0, column: int = 0) -> str:
        """The callback data of a button in the sent or edited message's inline keyboard."""
        keyboard = self.params["reply_markup"]["inline_keyboard"]
        return str(keyboard[row][column]["callback_data"])


def user(user_id: int, language_code: str = "zh-hans", first_name: str = "商家") -> dict[str, Any]:
    return {
        "id": user_id,
        "is_bot": False,
        "first_name": first_name,
        "language_code": language_code,
    }


def private_chat(person: dict[str, Any]) -> dict[str, Any]:
    return {"id": person["id"], "type": "private", "first_name": person["first_name"]}


def group_chat(chat_id: int) -> dict[str, Any]:
    return {"id": chat_id, "type": "supergroup", "title": "外卖店"}


class FakeTelegram:
    def __init__(self, token: str = TOKEN, username: str = "waimai_test_bot") -> None:
        self.token = token
        self.me = {"id": int(token.split(":")[0]), "is_bot": True, "first_name": "Waimai"}
        self.me["username"] = username
        self.calls: list[Call] = []
        self.files: dict[str, tuple[str, bytes]] = {}
        """file_id → (file_path, content): what users uploaded and what the bot sent."""
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.webhook: dict[str, Any] | None = None
        """The parameters of the last setWebhook (None: no webhook, polling works)."""
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._ids = itertools.count(1)
        self._failures: dict[str, list[int]] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.base_url = ""

    # -- serving ---------------------------------------------------------------------------

    async def start(self, port: int = 0) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def close(self) -> None:
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            status, body = _error(401, "Unauthorized")
            return web.json_response(body, status=status)
        method = request.match_info["method"]
        params = await _params(request)
        status, body = await self._answer(method, params)
        async with self._changed:
            recorded = {k: v for k, v in params.items() if k != "_files"}
            self.calls.append(Call(method, recorded, status, body.get("result")))
            self._changed.notify_all()
        return web.json_response(body, status=status)

    async def _answer(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self._failures.get(method):
            retry_after = self._failures[method].pop(0)
            return 429, {
                "ok": False,
                "error_code": 429,
                "description": f"Too Many Requests: retry after {retry_after}",
                "parameters": {"retry_after": retry_after},
            }
        handler = getattr(self, f"_m_{method.lower()}", None)
        if handler is None:
            return _error(404, "Not Found: method not found")
        try:
            return 200, {"ok": True, "result": await handler(params)}
        except _BadRequest as error:
            return _error(400, f"Bad Request: {error}")
        except _Conflict as error:
            return _error(409, f"Conflict: {error}")

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        for path, content in self.files.values():
            if path == request.match_info["path"]:
                return web.Response(body=content)
        return web.Response(status=404)

    # -- the Bot API methods -----------------------------------------------------------------

    async def _m_getme(self, _: dict[str, Any]) -> dict[str, Any]:
        return self.me

    async def _m_getupdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook is not None:
            raise _Conflict(
                "can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first"
            )
        offset, limit = params.get("offset", 0), params.get("limit", 100)
        deadline = time.monotonic() + params.get("timeout", 0)
        async with self._changed:
            while True:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
                if self._updates or time.monotonic() >= deadline or self._closing:
                    return self._updates[:limit]
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())

    async def _m_sendmessage(self, params: dict[str, Any]) -> dict[str, Any]:
        markup = params.get("reply_markup")
        return self._bot_message(params["chat_id"], text=params["text"], reply_markup=markup)

    async def _m_senddocument(self, params: dict[str, Any]) -> dict[str, Any]:
        name, content = params["_files"][params["document"].removeprefix("attach://")]
        document = self._store_file(name, content, "text/csv")
        extra = {"caption": params["caption"]} if "caption" in params else {}
        return self._bot_message(params["chat_id"], document=document, **extra)

    async def _m_editmessagetext(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._message(params)
        changes = {"text": params["text"], "reply_markup": params.get("reply_markup")}
        return self._edit(message, changes)

    async def _m_editmessagereplymarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._edit(self._message(params), {"reply_markup": params.get("reply_markup")})

    async def _m_answercallbackquery(self, _: dict[str, Any]) -> bool:
        return True

    async def _m_setwebhook(self, params: dict[str, Any]) -> bool:
        if not params.get("url"):
            return await self._m_deletewebhook(params)
        self.webhook = {k: v for k, v in params.items() if k != "_files"}
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _m_deletewebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = None
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _m_getwebhookinfo(self, _: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook is not None:
            info["url"] = self.webhook["url"]
            if "allowed_updates" in self.webhook:
                info["allowed_updates"] = self.webhook["allowed_updates"]
        return info

    async def _m_getfile(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("file_id") not in self.files:
            raise _BadRequest("invalid file_id")
        path, content = self.files[params["file_id"]]
        file_id = params["file_id"]
        return {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_size": len(content),
            "file_path": path,
        }

    def _message(self, params: dict[str, Any]) -> dict[str, Any]:
        key = (params.get("chat_id"), params.get("message_id"))
        if key not in self.messages:
            raise _BadRequest("message to edit not found")
        return self.messages[key]

    def _edit(self, message: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        updated = {**message, **{k: v for k, v in changes.items() if v is not None}}
        if changes.get("reply_markup") is None:
            updated.pop("reply_markup", None)
        if updated == message:
            raise _BadRequest(
                "message is not modified: specified new message content and reply markup "
                "are exactly the same as a current content and reply markup of the message"
            )
        updated["edit_date"] = int(time.time())
        self.messages[(message["chat"]["id"], message["message_id"])] = updated
        return updated

    def _bot_message(self, chat_id: int, **content: Any) -> dict[str, Any]:
        private = {"id": chat_id, "type": "private", "first_name": "商家"}
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": private if chat_id > 0 else group_chat(chat_id),
            "from": self.me,
            **{k: v for k, v in content.items() if v is not None},
        }
        self.messages[(chat_id, message["message_id"])] = message
        return message

    def _store_file(self, name: str, content: bytes, mime_type: str) -> dict[str, Any]:
        file_id = f"file{next(self._ids)}"
        self.files[file_id] = (f"documents/{file_id}_{name}", content)
        return {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_name": name,
            "mime_type": mime_type,
            "file_size": len(content),
        }

    # -- playing the users -------------------------------------------------------------------

    async def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update (its ``update_id`` is assigned unless given) for getUpdates."""
        update.setdefault("update_id", next(self._update_ids))
        async with self._changed:
            self._updates.append(update)
            self._changed.notify_all()
        return update

    async def send_text(
        self, person: dict[str, Any], text: str, chat: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        update = self.text_update(person, text, chat)
        await self.push(update)
        return dict(update["message"])

    def text_update(
        self, person: dict[str, Any], text: str, chat: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """An update (with a fresh ``update_id``) of ``person`` sending ``text``, not queued:
        for a test that posts it to a webhook."""
        message = self._user_message(person, chat, text=text)
        if text.startswith("/"):
            command = text.split()[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return {"update_id": next(self._update_ids), "message": message}

    async def send_document(
        self, person: dict[str, Any], name: str, content: bytes, mime_type: str = "text/csv"
    ) -> dict[str, Any]:
        message = self._user_message(
            person, None, document=self._store_file(name, content, mime_type)
        )
        await self.push({"message": message})
        return message

    async def press(self, person: dict[str, Any], message: dict[str, Any], data: str) -> None:
        """Press a button with ``data`` under the bot's ``message`` (as it is now)."""
        current = self.messages[(message["chat"]["id"], message["message_id"])]
        await self.push(
            {
                "callback_query": {
                    "id": str(next(self._ids)),
                    "from": person,
                    "chat_instance": str(current["chat"]["id"]),
                    "message": current,
                    "data": data,
                }
            }
        )

    def fail_next(self, method: str, retry_after: int) -> None:
        """The next call of ``method`` gets a 429 asking to retry after ``retry_after`` s."""
        self._failures.setdefault(method, []).append(retry_after)

    def _user_message(
        self, person: dict[str, Any], chat: dict[str, Any] | None, **content: Any
    ) -> dict[str, Any]:
        return {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat or private_chat(person),
            "from": person,
            **content,
        }

    # -- looking at what the bot did ---------------------------------------------------------

    def calls_of(self, method: str, **params: Any) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == method and all(c.params.get(k) == v for k, v in params.items())
        ]

    def mark(self) -> int:
        """A point in the call log, for ``wait_for(after=...)``."""
        return len(self.calls)

    async def wait_for(
        self,
        method: str,
        match: Callable[[Call], bool] = lambda c: True,
        *,
        after: int = 0,
        timeout: float = 10,
    ) -> Call:
        """The first call of ``method`` after the mark ``after`` that ``match`` accepts,
        waiting for it up to ``timeout`` seconds."""

        def found() -> Call | None:
            for call in self.calls[after:]:
                if call.method == method and match(call):
                    return call
            return None

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(found), timeout)
        call = found()
        assert call is not None
        return call

    def sent(self, chat_id: int) -> list[dict[str, Any]]:
        """The bot's messages in a chat as they are now, oldest first."""
        return [
            m
            for (c, _), m in sorted(self.messages.items())
            if c == chat_id and m["from"] == self.me
        ]


class _BadRequest(Exception):
    pass


class _Conflict(Exception):
    pass


def _error(status: int, description: str) -> tuple[int, dict[str, Any]]:
    return status, {"ok": False, "error_code": status, "description": description}


async def _params(request: web.Request) -> dict[str, Any]:
    """The form fields aiogram sends, typed back: ints, JSON objects, booleans, and files."""
    form = await request.post() if request.body_exists else {}
    params: dict[str, Any] = {"_files": {}}
    for key, value in form.items():
        if isinstance(value, web.FileField):
            params["_files"][key] = (value.filename, value.file.read())
        elif key in INT_FIELDS:
            params[key] = int(value)
        elif key in JSON_FIELDS:
            params[key] = json.loads(value)
        elif key in BOOL_FIELDS:
            params[key] = value == "true"
        else:
            params[key] = value
    return params


@contextmanager
def serving_in_thread(server: FakeTelegram) -> Iterator[str]:
    """Run ``server`` in a thread of its own (for synchronous callers); yields its base URL."""
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield server.base_url
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
