"""A fake Telegram Bot API server on loopback, for the real aiogram Bot to talk to.

It implements getMe, getUpdates (long polling with offsets; 409 Conflict while a webhook is
set, as Telegram does), sendMessage, editMessageText, editMessageReplyMarkup,
answerCallbackQuery, sendDocument and sendPhoto (multipart; a photo must be a PNG),
sendChatAction, setMyCommands, setMyDescription, setMyShortDescription, getFile, setWebhook,
deleteWebhook, getWebhookInfo and the file download path ``/file/bot<token>/<path>``, with
Telegram's limits on lengths (a text, a caption, a command, a description); records every
call; and lets a test play the users: messages, button presses (whose message carries a real,
non-zero date: ``"date": 0`` parses as an inaccessible message; a bot message sent in reply
carries the message it replies to, as Telegram's do), documents, and 429s with
``retry_after``. In webhook mode a test posts the updates itself (``text_update`` builds one).

Past 300 lines: one server, with every method the bot calls beside the users a test plays and
the views of what the bot did; split, each part would need the others' state.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import struct
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
JSON_FIELDS = {
    "reply_markup",
    "allowed_updates",
    "reply_parameters",
    "entities",
    "commands",
    "scope",
}
BOOL_FIELDS = {"show_alert", "disable_notification", "drop_pending_updates"}
MAX_TEXT = 4096
MAX_CAPTION = 1024
CHAT_ACTIONS = {
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
}
COMMAND = re.compile(r"[a-z0-9_]{1,32}")
MIME_TYPES = {
    "csv": "text/csv",
    "txt": "text/plain",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


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
        self.commands: dict[tuple[str, str], list[dict[str, str]]] = {}
        """(scope as JSON, language code or "") → the "/" menu set for it."""
        self.descriptions: dict[tuple[str, str], str] = {}
        """("description" or "short_description", language code or "") → the text."""
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
        text = params.get("text", "")
        if not text.strip():
            raise _BadRequest("message text is empty")
        if len(text) > MAX_TEXT:
            raise _BadRequest("message is too long")
        markup = params.get("reply_markup")
        return self._bot_message(params["chat_id"], params, text=text, reply_markup=markup)

    async def _m_senddocument(self, params: dict[str, Any]) -> dict[str, Any]:
        name, content = self._upload(params, "document")
        mime_type = MIME_TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")
        document = self._store_file(name, content, mime_type)
        return self._bot_message(params["chat_id"], params, document=document, **_caption(params))

    async def _m_sendphoto(self, params: dict[str, Any]) -> dict[str, Any]:
        name, content = self._upload(params, "photo")
        width, height = _picture_size(content)
        stored = self._store_file(name, content, "image/png")
        photo = [
            {
                "file_id": stored["file_id"],
                "file_unique_id": stored["file_unique_id"],
                "width": width,
                "height": height,
                "file_size": len(content),
            }
        ]
        return self._bot_message(params["chat_id"], params, photo=photo, **_caption(params))

    async def _m_sendchataction(self, params: dict[str, Any]) -> bool:
        if params.get("action") not in CHAT_ACTIONS:
            raise _BadRequest("wrong parameter action in request")
        return True

    async def _m_setmycommands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _BadRequest("commands must be a list of at most 100")
        for command in commands:
            if not COMMAND.fullmatch(command.get("command", "")):
                raise _BadRequest(f"BOT_COMMAND_INVALID: {command.get('command')!r}")
            if not 1 <= len(command.get("description", "")) <= 256:
                raise _BadRequest("command description must be 1-256 characters")
        scope = json.dumps(params.get("scope", {"type": "default"}), sort_keys=True)
        self.commands[(scope, params.get("language_code", ""))] = commands
        return True

    async def _m_setmydescription(self, params: dict[str, Any]) -> bool:
        return self._describe("description", params, 512)

    async def _m_setmyshortdescription(self, params: dict[str, Any]) -> bool:
        return self._describe("short_description", params, 120)

    def _describe(self, kind: str, params: dict[str, Any], limit: int) -> bool:
        text = params.get(kind, "")
        if len(text) > limit:
            raise _BadRequest(f"{kind} is longer than {limit} characters")
        self.descriptions[(kind, params.get("language_code", ""))] = text
        return True

    def _upload(self, params: dict[str, Any], field: str) -> tuple[str, bytes]:
        attached = str(params.get(field, "")).removeprefix("attach://")
        if attached not in params["_files"]:
            raise _BadRequest(f"there is no {field} in the request")
        name, content = params["_files"][attached]
        return str(name), bytes(content)

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

    def _bot_message(self, chat_id: int, params: dict[str, Any], **content: Any) -> dict[str, Any]:
        private = {"id": chat_id, "type": "private", "first_name": "商家"}
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": private if chat_id > 0 else group_chat(chat_id),
            "from": self.me,
            **{k: v for k, v in content.items() if v is not None},
        }
        reply = params.get("reply_parameters") or {}
        replied = reply.get("message_id") or params.get("reply_to_message_id")
        if replied is not None and (chat_id, replied) in self.messages:
            original = self.messages[(chat_id, replied)]
            message["reply_to_message"] = {
                k: v for k, v in original.items() if k != "reply_to_message"
            }
        elif replied is not None and not reply.get("allow_sending_without_reply"):
            raise _BadRequest("message to be replied not found")
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
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat or private_chat(person),
            "from": person,
            **content,
        }
        self.messages[(message["chat"]["id"], message["message_id"])] = message
        return message

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

    def menu(self, language_code: str = "", chat_id: int | None = None) -> list[str]:
        """The commands of the "/" menu set for a language ("" the default) and a scope (the
        default one, or a chat's)."""
        scope: dict[str, Any] = {"type": "default"}
        if chat_id is not None:
            scope = {"type": "chat", "chat_id": chat_id}
        commands = self.commands.get((json.dumps(scope, sort_keys=True), language_code), [])
        return [c["command"] for c in commands]

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


def _caption(params: dict[str, Any]) -> dict[str, str]:
    if "caption" not in params:
        return {}
    if len(params["caption"]) > MAX_CAPTION:
        raise _BadRequest("message caption is too long")
    return {"caption": params["caption"]}


def _picture_size(content: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, from its header; anything else is refused."""
    if not (content.startswith(b"\x89PNG\r\n\x1a\n") and content[12:16] == b"IHDR"):
        raise _BadRequest("IMAGE_PROCESS_FAILED")
    width, height = struct.unpack(">II", content[16:24])
    return int(width), int(height)


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
