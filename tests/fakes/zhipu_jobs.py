"""Fine-tune jobs of the fake Zhipu: a lifecycle read off a clock, their JSON as Zhipu sends it.

As Zhipu's fine-tuning guide has it: only base models are fine-tuned (glm-4-flash by LoRA, the
models that offer only full-parameter training by that); a text LoRA fine-tune answers on the
shared pool as soon as it succeeded, any other only once deployed (``deploy``, the console's
私有实例), under a model code of its own. A job's metrics events carry ``loss`` each step and,
with a validation file, ``eval_loss`` at the end of each epoch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from tests.fakes.zhipu_errors import ZhipuError

if TYPE_CHECKING:
    from tests.fakes.zhipu_server import FakeZhipu

METRIC_STEPS = 4
"""Steps an epoch."""
T = TypeVar("T")
FINE_TUNABLE = {"glm-4-flash": "lora", "glm-4-air-250414": "full", "glm-4.5-air": "full"}
"""Base model → how the API fine-tunes it (Zhipu documents no switch between LoRA and full)."""
HYPERPARAMETERS = {"n_epochs": int, "batch_size": int, "learning_rate_multiplier": float}


@dataclass
class FakeJob:
    id: str
    request_id: str
    model: str
    training_file: str
    validation_file: str | None
    hyperparameters: dict[str, Any]
    method: str
    fine_tuned_model: str
    created_at: float
    queue_s: float
    train_s: float
    outcome: str
    """``succeeded`` or ``failed``: how the job ends unless it is cancelled."""
    memory: dict[str, str] = field(default_factory=dict)
    cancelled_at: float | None = None
    queued_status: str = "pending"
    request: dict[str, Any] = field(default_factory=dict)
    """The body the job was created with, as sent."""
    deployed_as: str | None = None
    """The model code of its deployment, once deployed."""

    @property
    def started_at(self) -> float:
        return self.created_at + self.queue_s

    @property
    def ends_at(self) -> float:
        return self.started_at + self.train_s

    def status(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "cancelled"
        if now < self.started_at:
            return self.queued_status
        if now < self.ends_at:
            return "running"
        return self.outcome

    def unfinished(self, now: float) -> bool:
        return self.status(now) not in ("succeeded", "failed", "cancelled")

    def finished_at(self, now: float) -> float | None:
        if self.cancelled_at is not None:
            return self.cancelled_at
        return self.ends_at if now >= self.ends_at else None

    @property
    def epochs(self) -> int:
        epochs = self.hyperparameters.get("n_epochs", "auto")
        return epochs if isinstance(epochs, int) else 3

    @property
    def trained_tokens(self) -> int:
        per_epoch = sum(len(review) + len(answer) + 4 * 3 for review, answer in self.memory.items())
        return per_epoch * self.epochs


def job_json(job: FakeJob, now: float) -> dict[str, Any]:
    status = job.status(now)
    finished = job.finished_at(now)
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "request_id": job.request_id,
        "model": job.model,
        "created_at": int(job.created_at),
        "finished_at": int(finished) if finished is not None else None,
        "fine_tuned_model": job.fine_tuned_model,
        "hyperparameters": job.hyperparameters,
        "status": status,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "result_files": [],
        "trained_tokens": job.trained_tokens if status == "succeeded" else None,
        "error": {"code": "1500", "message": "训练失败：loss 出现 NaN"}
        if status == "failed"
        else None,
    }


def train_loss(step: int) -> float:
    return round(1.2 / step, 4)


def validation_loss(step: int) -> float:
    return round(1.3 / step + 0.05, 4)


def job_events(job: FakeJob, now: float) -> list[dict[str, Any]]:
    """The events that have happened by ``now``, newest first."""
    happened: list[tuple[float, str, str, dict[str, Any] | None]] = [
        (job.created_at, "message", f"创建微调任务 {job.id}", None)
    ]
    if job.cancelled_at is not None:
        happened.append((job.cancelled_at, "message", "任务已取消", None))
    if now >= job.started_at and (job.cancelled_at is None or job.cancelled_at > job.started_at):
        happened.append((job.started_at, "message", f"开始训练 ({job.method})", None))
        total = METRIC_STEPS * job.epochs
        for step in range(1, total + 1):
            at = job.started_at + job.train_s * step / (total + 1)
            if at <= now and (job.cancelled_at is None or at < job.cancelled_at):
                metric: dict[str, Any] = {
                    "epoch": round(step / METRIC_STEPS, 2),
                    "current_steps": step,
                    "total_steps": total,
                    "loss": train_loss(step),
                }
                if job.validation_file and step % METRIC_STEPS == 0:
                    metric["eval_loss"] = validation_loss(step)
                happened.append((at, "metrics", f"step {step}/{total}", metric))
    if job.cancelled_at is None and now >= job.ends_at:
        word = "训练完成" if job.outcome == "succeeded" else "训练失败"
        happened.append((job.ends_at, "message", word, None))
    happened.sort(key=lambda event: event[0])
    events = [
        {
            "object": "fine_tuning.job.event",
            "id": f"ftevent-{job.id.removeprefix('ftjob-')}-{number}",
            "type": kind,
            "created_at": int(at),
            "level": "info",
            "message": message,
            "data": data,
        }
        for number, (at, kind, message, data) in enumerate(happened, 1)
    ]
    return events[::-1]


def job_routes(fake: FakeZhipu) -> APIRouter:
    """``/fine_tuning/jobs`` (create, list, retrieve, events, cancel, delete) and model delete."""
    router = APIRouter()

    def known(job_id: str) -> FakeJob:
        job = fake.jobs.get(job_id)
        if job is None:
            raise ZhipuError(404, "1214", f"job {job_id} not found")
        return job

    @router.post("/fine_tuning/jobs")
    async def create_job(request: Request) -> Response:
        body = await request.json()
        model, training = body.get("model"), fake.files.get(body.get("training_file") or "")
        if model not in FINE_TUNABLE:
            raise ZhipuError(400, "1211", f"模型不存在，请检查模型代码：{model} 不能微调。")
        validation_id = body.get("validation_file")
        if training is None or (validation_id and validation_id not in fake.files):
            raise ZhipuError(400, "1214", "training_file 或 validation_file 参数非法。请检查文档。")
        if problem := hyperparameters_problem(body.get("hyperparameters") or {}):
            raise ZhipuError(400, "1214", problem)
        suffix = body.get("suffix") or "ft"
        job = FakeJob(
            id=fake.new_id("ftjob"),
            request_id=body.get("request_id") or fake.new_id("req"),
            model=model,
            training_file=training.id,
            validation_file=validation_id,
            hyperparameters=body.get("hyperparameters") or {},
            method=FINE_TUNABLE[model],
            fine_tuned_model=f"{model}:{fake.account}:{suffix}:{fake.random_tail(8)}",
            created_at=fake.clock(),
            queue_s=fake.queue_s,
            train_s=fake.train_s,
            outcome=fake.job_outcome,
            memory=memorize(training.content),
            queued_status=fake.queued_status,
            request=body,
        )
        fake.jobs[job.id] = job
        return JSONResponse(job_json(job, fake.clock()))

    @router.get("/fine_tuning/jobs")
    async def list_jobs(after: str | None = None, limit: int = 20) -> Response:
        jobs = page(list(reversed(fake.jobs.values())), after, lambda job: job.id)
        data = [job_json(job, fake.clock()) for job in jobs[:limit]]
        return JSONResponse({"object": "list", "data": data, "has_more": len(jobs) > limit})

    @router.get("/fine_tuning/jobs/{job_id}")
    async def retrieve_job(job_id: str) -> Response:
        return JSONResponse(job_json(known(job_id), fake.clock()))

    @router.get("/fine_tuning/jobs/{job_id}/events")
    async def list_events(job_id: str, after: str | None = None, limit: int = 20) -> Response:
        events = page(job_events(known(job_id), fake.clock()), after, lambda event: event["id"])
        body = {"object": "list", "data": events[:limit], "has_more": len(events) > limit}
        return JSONResponse(body)

    @router.post("/fine_tuning/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str) -> Response:
        job = known(job_id)
        if not job.unfinished(fake.clock()):
            raise ZhipuError(400, "1214", f"job {job_id} has already ended")
        job.cancelled_at = fake.clock()
        return JSONResponse(job_json(job, fake.clock()))

    @router.delete("/fine_tuning/jobs/{job_id}")
    async def delete_job(job_id: str) -> Response:
        job = known(job_id)
        if job.unfinished(fake.clock()):
            raise ZhipuError(400, "1214", "cancel a running job before deleting it")
        del fake.jobs[job_id]
        return JSONResponse(job_json(job, fake.clock()))

    @router.delete("/fine_tuning/fine_tuned_models/{name}")
    async def delete_model(name: str) -> Response:
        if not any(job.fine_tuned_model == name for job in fake.jobs.values()):
            raise ZhipuError(404, "1211")
        fake.deleted_models.add(name)
        body = {"request_id": fake.new_id("req"), "model_name": name, "delete_status": "deleting"}
        return JSONResponse(body)

    return router


def serving_job(fake: FakeZhipu, model: str) -> FakeJob | None:
    """The succeeded job whose model answers as ``model`` on the shared pool: its LoRA model, or
    the deployment of any other (an undeployed full fine-tune answers nothing)."""
    for job in fake.jobs.values():
        if job.status(fake.clock()) != "succeeded" or job.fine_tuned_model in fake.deleted_models:
            continue
        if model == job.deployed_as or (model == job.fine_tuned_model and job.method == "lora"):
            return job
    return None


def deploy(fake: FakeZhipu, job_id: str) -> str:
    """What deploying the job's model in Zhipu's console does: a model code of its own."""
    job = fake.jobs[job_id]
    job.deployed_as = f"{job.model}-{fake.random_tail(8)}"
    return job.deployed_as


def hyperparameters_problem(hyperparameters: dict[str, Any]) -> str | None:
    for name, value in hyperparameters.items():
        kind = HYPERPARAMETERS.get(name)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if kind is None or not (value == "auto" or (number and value > 0)):
            return f"hyperparameters.{name} 参数非法。请检查文档。"
        if kind is int and number and not float(value).is_integer():
            return f"hyperparameters.{name} 参数非法。请检查文档。"
    return None


def page(items: list[T], after: str | None, key: Callable[[T], str]) -> list[T]:
    """The items that come after the one whose key is ``after`` (all of them without it)."""
    if after is None:
        return items
    keys = [key(item) for item in items]
    return items[keys.index(after) + 1 :] if after in keys else []


def training_file_problem(content: bytes) -> str | None:
    for number, line in enumerate(content.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            roles = [m["role"] for m in json.loads(line)["messages"]]
        except (ValueError, KeyError, TypeError):
            return f"line {number} is not a chat example"
        if "user" not in roles or "assistant" not in roles:
            return f"line {number} lacks a user or an assistant message"
    return None


def memorize(content: bytes) -> dict[str, str]:
    """A fine-tuned fake model answers its training examples as it was taught."""
    memory = {}
    for line in content.decode("utf-8").splitlines():
        if line.strip():
            messages = json.loads(line)["messages"]
            memory[messages[-2]["content"]] = messages[-1]["content"]
    return memory
