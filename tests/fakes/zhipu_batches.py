"""The Batch API of the fake Zhipu: ``/batches`` and the batch files' content.

As Zhipu documents it (docs.bigmodel.cn, 批量处理): the requests are a JSONL file uploaded with
purpose ``batch``, one request a line (``custom_id`` of at least 6 characters, ``method``,
``url`` ``/v4/chat/completions``, ``body``), all for one model; a refused file is refused at
upload with code 1210. A batch goes ``validating → in_progress → completed`` (or ``expired``,
``cancelled``, ``failed``), then its answers are in ``output_file_id`` and the requests that
failed in ``error_file_id``, one line each: ``{"custom_id", "id", "response": {"status_code",
"body"}}``. Each line is answered by the same rule as a chat request (the chat route's own
function), so a batch and the per-request path give the same answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from tests.fakes.zhipu_errors import ZhipuError
from tests.fakes.zhipu_jobs import page

if TYPE_CHECKING:
    from tests.fakes.zhipu_server import FakeZhipu

ENDPOINT = "/v4/chat/completions"
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
Chat = Callable[["FakeZhipu", dict[str, Any], Any], Response]
"""The chat route's answer to a request body (raises ZhipuError as the route would)."""


@dataclass
class FakeBatch:
    id: str
    input_file_id: str
    requests: list[dict[str, Any]]
    metadata: dict[str, str] | None
    created_at: float
    cancelled_at: float | None = None
    finished_at: float | None = None
    status_when_done: str = "completed"
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    answered: int = 0
    failed: int = 0


@dataclass
class BatchDesk:
    """The fake's batches, and how its Batch API behaves."""

    batches: dict[str, FakeBatch] = field(default_factory=dict)
    takes_s: float = 0.3
    """A batch is answered this long after it was created."""
    clock: Callable[[], float] = time.time
    """Its own clock: a test that steps the fine-tune jobs' clock still sees batches end."""
    models: frozenset[str] | None = None
    """The models a batch may ask (Zhipu keeps a list; its upload refuses others with 1210);
    None: every model."""
    failing_lines: int = 0
    """The first this many requests of each batch fail inside the batch (500, code 1234)."""
    expire_after: int | None = None
    """A batch expires after answering this many requests (None: it completes)."""
    invalid: str | None = None
    """A batch fails its validation with this message (None: it passes)."""
    answered: int = 0
    """Requests answered in batches, all batches together."""


def batch_file_problem(fake: FakeZhipu, content: bytes) -> str | None:
    """Why Zhipu's upload would refuse ``content`` as a batch file (code 1210), if it would."""
    models = set()
    for number, line in enumerate(content.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            custom_id, body = str(request["custom_id"]), request["body"]
            models.add(str(body["model"]))
        except (ValueError, KeyError, TypeError):
            return f"第 {number} 行不是一个请求"
        if len(custom_id) < 6:
            return "custom id 长度不足, 最短: 6"
        if request.get("method") != "POST" or request.get("url") != ENDPOINT:
            return f"第 {number} 行的 url 须为 {ENDPOINT}"
    if len(models) > 1:
        return "一个 batch 文件只能包含对单一模型的请求"
    allowed = fake.batch.models
    if allowed is not None and not models <= allowed:
        return f"模型名称错误，支持的模型：{'、'.join(sorted(allowed))}"
    return None


def batch_routes(fake: FakeZhipu, chat: Chat) -> APIRouter:
    """``/batches`` (create, list, retrieve, cancel) and ``/files/{id}/content``."""
    router = APIRouter()
    desk = fake.batch

    def known(batch_id: str) -> FakeBatch:
        batch = desk.batches.get(batch_id)
        if batch is None:
            raise ZhipuError(404, "1214", f"batch {batch_id} 不存在")
        return batch

    @router.post("/batches")
    async def create_batch(request: Request) -> Response:
        body = await request.json()
        if body.get("endpoint") != ENDPOINT:
            raise ZhipuError(400, "1214", f"endpoint 参数非法，目前仅支持 {ENDPOINT}")
        file = fake.files.get(str(body.get("input_file_id")))
        if file is None or file.purpose != "batch":
            raise ZhipuError(400, "1214", "input_file_id 参数非法。请检查文档。")
        requests = [json.loads(line) for line in file.content.decode().splitlines() if line]
        batch = FakeBatch(
            id=f"batch_{fake.random_tail(19)}",
            input_file_id=file.id,
            requests=requests,
            metadata=body.get("metadata"),
            created_at=desk.clock(),
        )
        if body.get("auto_delete_input_file", True):
            del fake.files[file.id]
        desk.batches[batch.id] = batch
        return JSONResponse(batch_json(batch, desk.clock()))

    @router.get("/batches")
    async def list_batches(after: str | None = None, limit: int = 20) -> Response:
        batches = page(list(reversed(desk.batches.values())), after, lambda batch: batch.id)
        data = [batch_json(_advanced(fake, chat, b), desk.clock()) for b in batches[:limit]]
        return JSONResponse({"object": "list", "data": data, "has_more": len(batches) > limit})

    @router.get("/batches/{batch_id}")
    async def retrieve_batch(batch_id: str) -> Response:
        return JSONResponse(batch_json(_advanced(fake, chat, known(batch_id)), desk.clock()))

    @router.post("/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str) -> Response:
        batch = _advanced(fake, chat, known(batch_id))
        if batch.finished_at is None:
            batch.cancelled_at = desk.clock()
        return JSONResponse(batch_json(batch, desk.clock()))

    @router.get("/files/{file_id}/content")
    async def file_content(file_id: str) -> Response:
        file = fake.files.get(file_id)
        if file is None or file.purpose != "batch":
            raise ZhipuError(404, "1214", f"file {file_id} 不存在或不是 batch 文件")
        return Response(file.content, media_type="application/octet-stream")

    return router


def batch_json(batch: FakeBatch, now: float) -> dict[str, Any]:
    status = batch_status(batch, now)
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": ENDPOINT,
        "input_file_id": batch.input_file_id,
        "completion_window": None,
        "status": status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": int(batch.created_at * 1000),
        "completed_at": _ms(batch.finished_at) if status == "completed" else None,
        "expired_at": _ms(batch.finished_at) if status == "expired" else None,
        "cancelled_at": _ms(batch.cancelled_at),
        "request_counts": {
            "total": len(batch.requests),
            "completed": batch.answered if batch.finished_at is not None else None,
            "failed": batch.failed if batch.finished_at is not None else None,
        },
        "metadata": batch.metadata,
        "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
    }


def batch_status(batch: FakeBatch, now: float) -> str:
    if batch.finished_at is not None:
        return batch.status_when_done
    if batch.cancelled_at is not None:
        return "cancelled"
    return "validating" if now < batch.created_at + 0.01 else "in_progress"


def _advanced(fake: FakeZhipu, chat: Chat, batch: FakeBatch) -> FakeBatch:
    """The batch as it is by now: answered, with its files written, once its time has come."""
    desk = fake.batch
    due = batch.created_at + desk.takes_s
    if batch.finished_at is not None or batch.cancelled_at is not None or desk.clock() < due:
        return batch
    if desk.invalid is not None:
        batch.status_when_done = "failed"
        batch.errors = [{"code": "1214", "line": 1, "message": desk.invalid}]
        batch.finished_at = desk.clock()
        return batch
    answers: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for number, request in enumerate(batch.requests):
        if desk.expire_after is not None and number >= desk.expire_after:
            batch.status_when_done = "expired"
            break
        status, body = _answer(fake, chat, request["body"], fails=number < desk.failing_lines)
        line = {"custom_id": request["custom_id"], "id": batch.id}
        line["response"] = {"status_code": status, "body": body}
        (answers if status == 200 else errors).append(line)
    batch.answered, batch.failed = len(answers), len(errors)
    desk.answered += len(answers)
    batch.output_file_id = _write(fake, batch, "output", answers)
    batch.error_file_id = _write(fake, batch, "error", errors)
    batch.finished_at = desk.clock()
    return batch


def _answer(
    fake: FakeZhipu, chat: Chat, body: dict[str, Any], *, fails: bool
) -> tuple[int, dict[str, Any]]:
    try:
        if fails:
            raise ZhipuError(500, "1234", "网络错误，错误id：fake，请联系客服")
        return 200, json.loads(bytes(chat(fake, body, None).body))
    except ZhipuError as error:
        return error.status, {"error": {"code": error.code, "message": error.message}}


def _write(fake: FakeZhipu, batch: FakeBatch, kind: str, lines: list[dict[str, Any]]) -> str | None:
    if not lines:
        return None
    from tests.fakes.zhipu_server import FakeFile  # it imports this module

    content = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
    name = f"{batch.id}_{kind}.jsonl"
    file = FakeFile(fake.new_id("file"), name, "batch", content, desk_time_ms(fake))
    fake.files[file.id] = file
    return file.id


def desk_time_ms(fake: FakeZhipu) -> int:
    return int(fake.batch.clock() * 1000)


def _ms(moment: float | None) -> int | None:
    return int(moment * 1000) if moment is not None else None
