"""A fake Zhipu open platform (``/api/paas/v4``), faithful to what the zhipuai SDK sends, parses.

Chat completions answer by a configurable rule; files and fine-tune jobs keep state in memory,
and a job goes ``created → running → succeeded | failed`` on a configurable clock (or is
cancelled). Faults can be injected: any status with a Zhipu error code, slow answers, answers
that hang past the client's timeout, answers that are not a label.

As Zhipu's models do: GLM-4.5 and later think before answering unless the request says
``thinking: {"type": "disabled"}``, and the thinking counts towards ``max_tokens`` (too few end
with ``finish_reason: "length"`` and empty content); an answer longer than ``max_tokens`` (one
token a character) is cut. The content filter refuses a review containing ``FILTERED_INPUT``
(400, code 1301) and withholds the answer to one containing ``WITHHELD_ANSWER`` (200,
``finish_reason: "sensitive"``). A model in ``inaccessible_models`` gets 403 with code 1220,
one that does not exist 400 with code 1211.

Run it as a local demo: ``python -m tests.fakes.zhipu_server`` (``--help`` for the options).

Past 300 lines: one fake of one API; the jobs and batches live in their own modules.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
import string
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import jwt
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.fakes.zhipu_batches import BatchDesk, batch_file_problem, batch_routes
from tests.fakes.zhipu_errors import ZhipuError
from tests.fakes.zhipu_jobs import FakeJob, job_routes, serving_job, training_file_problem

API_PREFIX = "/api/paas/v4"
DEMO_API_KEY = "fakeid.fakesecret"
REASONING_MODELS = frozenset({"glm-4.5", "glm-4.5-air", "glm-4.5-flash", "glm-4.6", "glm-4.7"})
"""Hybrid reasoning models: they think first unless told not to (Zhipu's 深度思考 guide)."""
BASE_MODELS = frozenset({"glm-4-flash", "glm-4-air", "glm-4-plus", "glm-4-long", "glm-4"})
BASE_MODELS |= REASONING_MODELS
REASONING = "嗯，用户给了一条外卖评论，让我判断是好评还是差评。我先看看评论里说了什么，再看语气。"
"""What a reasoning model thinks before it answers (one token a character, as all here)."""
DEFAULT_MAX_TOKENS = 1024
FILTERED_INPUT = "【敏感输入】"
"""A review containing this is refused by the content filter before the model sees it (1301)."""
WITHHELD_ANSWER = "【敏感回答】"
"""The answer to a review containing this is withheld by the filter (finish_reason sensitive)."""
POSITIVE_CUES: tuple[str, ...] = ("好吃", "不错", "满意", "快", "棒", "赞", "喜欢", "新鲜")
POSITIVE_CUES += ("推荐", "热情", "香", "实惠", "划算", "准时", "还会", "挺好", "很好", "美味")
NEGATIVE_CUES: tuple[str, ...] = ("难吃", "慢", "差", "凉", "冷", "少", "贵", "不好", "失望")
NEGATIVE_CUES += ("退", "太久", "咸", "糊", "酸", "等了", "没有", "投诉", "垃圾", "硬", "一般")

AnswerRule = Callable[[str], str]
"""The review text (the user message) → the assistant's answer."""


def keyword_rule(review: str) -> str:
    """差评 when the review has more negative cue words than positive ones, else 好评."""
    positive = sum(review.count(cue) for cue in POSITIVE_CUES)
    negative = sum(review.count(cue) for cue in NEGATIVE_CUES)
    return "差评" if negative > positive else "好评"


@dataclass
class Fault:
    """What the next matching request(s) get instead of a normal answer.

    ``kind``: ``error`` (``status`` with Zhipu ``code``, and ``message`` or the usual one),
    ``slow`` (answer after ``seconds``), ``hang`` (sleep ``seconds`` first: longer than the
    client waits), ``answer`` (say ``answer``).
    ``count`` requests are affected (None: until cleared); ``path`` is matched by its end.
    """

    kind: str = "error"
    status: int = 500
    code: str = "500"
    seconds: float = 0.0
    answer: str = ""
    count: int | None = 1
    path: str = "/chat/completions"
    message: str | None = None

    @classmethod
    def error(
        cls,
        status: int,
        code: str,
        count: int | None = 1,
        path: str = "/chat/completions",
        message: str | None = None,
    ) -> Fault:
        return cls("error", status=status, code=code, count=count, path=path, message=message)


@dataclass
class FakeFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at_ms: int

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at_ms,
            "filename": self.filename,
            "purpose": self.purpose,
        }


@dataclass
class FakeZhipu:
    """The fake's state and behaviour; ``app()`` is the ASGI app serving it."""

    api_key: str = DEMO_API_KEY
    answer: AnswerRule = keyword_rule
    latency_s: float = 0.0
    max_concurrency: int | None = None
    """Chat requests in flight above this get 429 with code 1302, as Zhipu does."""
    queue_s: float = 1.0
    train_s: float = 3.0
    job_outcome: str = "succeeded"
    queued_status: str = "pending"
    """What a job waiting its turn reports: Zhipu's console says 排队中 and its Java SDK
    ``pending``; OpenAI-style services say ``queued`` or ``validating_files``."""
    clock: Callable[[], float] = time.time
    account: str = "1601347751"
    base_url: str = ""
    """Where it is served, once it is (``serving`` yields it too)."""
    faults: list[Fault] = field(default_factory=list)
    files: dict[str, FakeFile] = field(default_factory=dict)
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    batch: BatchDesk = field(default_factory=BatchDesk)
    deleted_models: set[str] = field(default_factory=set)
    inaccessible_models: set[str] = field(default_factory=set)
    """Models this account may not call: 403 with code 1220."""
    answered: Counter[str] = field(default_factory=Counter)
    """How many times each review got a 200 answer."""
    refusals: Counter[int] = field(default_factory=Counter)
    """Error answers given, by HTTP status."""
    last_chat: dict[str, Any] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0

    def inject(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def new_id(self, prefix: str) -> str:
        now = datetime.fromtimestamp(self.clock())
        return f"{prefix}-{now:%Y%m%d%H%M%S}{now.microsecond // 1000:03d}-{self.random_tail(5)}"

    def take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if path.endswith(fault.path):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def authorized(self, header: str) -> bool:
        token = header.removeprefix("Bearer ").strip()
        if token == self.api_key:
            return True
        key_id, _, secret = self.api_key.partition(".")
        try:
            if jwt.get_unverified_header(token).get("sign_type") != "SIGN":
                return False
            claims = jwt.decode(token, secret, algorithms=["HS256"], options={"verify_exp": False})
        except jwt.PyJWTError:
            return False
        return bool(claims.get("api_key") == key_id and claims.get("exp", 0) > self.clock() * 1000)

    def fine_tuned(self, model: str) -> FakeJob | None:
        """The succeeded job whose model answers as ``model``, unless deleted since."""
        return serving_job(self, model)

    def random_tail(self, length: int) -> str:
        return "".join(
            secrets.choice(string.ascii_lowercase + string.digits) for _ in range(length)
        )

    def app(self) -> FastAPI:
        return build_app(self)


def build_app(fake: FakeZhipu) -> FastAPI:
    app = FastAPI(title="fake Zhipu open platform")

    @app.exception_handler(ZhipuError)
    async def refused(_request: Request, error: ZhipuError) -> Response:
        fake.refusals[error.status] += 1
        return error.response()

    async def faults_then_auth(request: Request) -> None:
        fault = fake.take_fault(request.url.path)
        if fault is not None and fault.kind == "error":
            raise ZhipuError(fault.status, fault.code, fault.message)
        if fault is not None and fault.kind in ("slow", "hang"):
            await asyncio.sleep(fault.seconds)
        if not fake.authorized(request.headers.get("authorization", "")):
            raise ZhipuError(401, "1002")
        request.state.fault = fault

    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(faults_then_auth)])

    @api.post("/chat/completions")
    async def chat(request: Request) -> Response:
        if fake.max_concurrency is not None and fake.in_flight >= fake.max_concurrency:
            raise ZhipuError(429, "1302")
        fake.in_flight += 1
        fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            await asyncio.sleep(fake.latency_s)
            return _chat(fake, await request.json(), request.state.fault)
        finally:
            fake.in_flight -= 1

    @api.post("/files")
    async def upload(request: Request) -> Response:
        form = await request.form()
        upload, purpose = form.get("file"), str(form.get("purpose", ""))
        if upload is None or isinstance(upload, str):
            raise ZhipuError(400, "1214", "file is required")
        if purpose not in ("fine-tune", "retrieval", "batch"):
            raise ZhipuError(400, "1214", f"purpose {purpose!r} is not supported")
        content = await upload.read()
        if purpose == "fine-tune" and (problem := training_file_problem(content)):
            raise ZhipuError(400, "1214", problem)
        if purpose == "batch" and (problem := batch_file_problem(fake, content)):
            raise ZhipuError(400, "1210", problem)
        file = FakeFile(fake.new_id("file"), upload.filename or "file", purpose, content, _ms(fake))
        fake.files[file.id] = file
        return JSONResponse(file.json())

    @api.get("/files")
    async def list_files(purpose: str | None = None, limit: int = 100) -> Response:
        files = [f for f in reversed(fake.files.values()) if purpose in (None, f.purpose)]
        data = [f.json() for f in files[:limit]]
        return JSONResponse({"object": "list", "data": data, "has_more": len(files) > limit})

    @api.delete("/files/{file_id}")
    async def delete_file(file_id: str) -> Response:
        if fake.files.pop(file_id, None) is None:
            raise ZhipuError(404, "1214", f"file {file_id} does not exist")
        return JSONResponse({"id": file_id, "deleted": True, "object": "file"})

    api.include_router(job_routes(fake))
    api.include_router(batch_routes(fake, _chat))
    app.include_router(api)
    _control_endpoints(app, fake)
    return app


def _chat(fake: FakeZhipu, body: dict[str, Any], fault: Fault | None) -> Response:
    fake.last_chat = body
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ZhipuError(400, "1214", "messages must be a non-empty list")
    model = str(body.get("model"))
    job = fake.fine_tuned(model)
    if job is None and model not in BASE_MODELS:
        raise ZhipuError(400, "1211")
    if model in fake.inaccessible_models:
        raise ZhipuError(403, "1220", f"您无权访问{model}。")
    review = str(messages[-1].get("content", ""))
    if FILTERED_INPUT in review:
        raise ZhipuError(400, "1301")
    if fault is not None and fault.kind == "answer":
        content = fault.answer
    elif job is not None and review in job.memory:
        content = job.memory[review]
    else:
        content = fake.answer(review)
    fake.answered[review] += 1
    thinks = model in REASONING_MODELS and body.get("thinking") != {"type": "disabled"}
    message, finish_reason = _written(
        content, REASONING if thinks else "", int(body.get("max_tokens") or DEFAULT_MAX_TOKENS)
    )
    if WITHHELD_ANSWER in review:
        finish_reason = "sensitive"
    prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) + 4 * len(messages)
    completion_tokens = len(message["content"]) + len(message.get("reasoning_content", ""))
    return JSONResponse(
        {
            "id": fake.new_id("chatcmpl"),
            "request_id": body.get("request_id") or fake.new_id("req"),
            "created": int(fake.clock()),
            "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": finish_reason, "message": message}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def _written(content: str, reasoning: str, max_tokens: int) -> tuple[dict[str, str], str]:
    """The assistant message and finish reason: thinking first, then the answer, together cut
    at ``max_tokens``."""
    message = {"role": "assistant", "content": content[: max(0, max_tokens - len(reasoning))]}
    if reasoning:
        message["reasoning_content"] = reasoning[:max_tokens]
    cut = len(reasoning) + len(content) > max_tokens
    return message, "length" if cut else "stop"


def _ms(fake: FakeZhipu) -> int:
    return int(fake.clock() * 1000)


def _control_endpoints(app: FastAPI, fake: FakeZhipu) -> None:
    """For a fake in another process (the benchmark, the demo): inject faults, read counters."""

    @app.post("/_fake/faults")
    async def inject(request: Request) -> Response:
        fake.inject(Fault(**await request.json()))
        return JSONResponse({"faults": [asdict(f) for f in fake.faults]})

    @app.delete("/_fake/faults")
    async def clear() -> Response:
        fake.faults.clear()
        return JSONResponse({"faults": []})

    @app.get("/_fake/stats")
    async def stats() -> Response:
        return JSONResponse(
            {
                "answered": sum(fake.answered.values()),
                "distinct_answered": len(fake.answered),
                "refusals": {str(k): v for k, v in sorted(fake.refusals.items())},
                "max_in_flight": fake.max_in_flight,
            }
        )


def _server(fake: FakeZhipu, host: str, port: int) -> tuple[uvicorn.Server, socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(
        fake.app(), log_level="warning", access_log=False, lifespan="off",
        timeout_graceful_shutdown=1,
    )  # fmt: skip
    return uvicorn.Server(config), sock


@contextmanager
def serving(fake: FakeZhipu, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``fake`` with uvicorn in a thread on a free loopback port; yields the base URL."""
    server, sock = _server(fake, host, port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the fake Zhipu server did not start")
        time.sleep(0.01)
    fake.base_url = f"http://{host}:{sock.getsockname()[1]}{API_PREFIX}"
    try:
        yield fake.base_url
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765, help="0: any free port")
    parser.add_argument("--api-key", default=DEMO_API_KEY)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--max-concurrency", type=int, default=None, help="429/1302 above it")
    parser.add_argument("--queue-s", type=float, default=5.0, help="a job waits this long")
    parser.add_argument("--train-s", type=float, default=20.0, help="then trains this long")
    parser.add_argument("--fail-jobs", action="store_true", help="jobs end as failed")
    args = parser.parse_args()
    fake = FakeZhipu(
        api_key=args.api_key,
        latency_s=args.latency,
        max_concurrency=args.max_concurrency,
        queue_s=args.queue_s,
        train_s=args.train_s,
        job_outcome="failed" if args.fail_jobs else "succeeded",
    )
    server, sock = _server(fake, "127.0.0.1", args.port)
    fake.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}{API_PREFIX}"
    print(f"fake Zhipu at {fake.base_url}  (ZHIPU__API_KEY={args.api_key})", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
