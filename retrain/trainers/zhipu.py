"""Zhipu fine-tune jobs: upload a snapshot, launch a job, poll it until it ends; restarts resume.

A snapshot gets one job, ever. Its FineTuneJob row is written before anything is sent, each
step's result (file ids, then the job id) is recorded as soon as it is known, and the snapshot
hash is the job's request id: a process that died between creating the job and recording it
finds the job again instead of launching a second one. On success the fine-tuned model is
registered as a candidate version and evaluated on the holdout through the Classifier interface.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zhipuai

from core.config import ZhipuSettings
from core.errors import AppError, BackendUnavailable, Conflict
from core.models import finetunes, registry
from core.store.tables import FineTuneJob, FineTuneStatus, ModelStatus, Snapshot, utcnow
from core.wiring import Core
from retrain import gate

log = logging.getLogger(__name__)

BACKEND = "zhipu"
MAX_FILE_BYTES = 100 * 1024 * 1024
TOKENS_PER_MESSAGE = 4
"""Role and framing tokens around each message's content."""
ENDED = frozenset({FineTuneStatus.SUCCEEDED, FineTuneStatus.FAILED, FineTuneStatus.CANCELLED})


class OverBudget(AppError):
    """The estimated cost of a fine-tune is above the budget setting."""

    code = "over_budget"


class NotConfigured(AppError):
    code = "not_configured"


@dataclass(frozen=True)
class CostEstimate:
    """Training tokens × epochs × price. Tokens are counted as one per character of the message
    contents, plus a few per message: GLM tokenizers need fewer for Chinese, so this errs high."""

    tokens_per_epoch: int
    epochs: int
    price_per_1k_tokens: float
    budget: float

    @property
    def cost(self) -> float:
        return self.tokens_per_epoch * self.epochs / 1000 * self.price_per_1k_tokens

    def describe(self) -> str:
        return (
            f"{self.tokens_per_epoch:,} tokens × {self.epochs} epochs × "
            f"{self.price_per_1k_tokens:g} yuan per 1k tokens ≈ {self.cost:.2f} yuan "
            f"(budget {self.budget:g} yuan)"
        )


def estimate(snapshot: Snapshot, settings: ZhipuSettings) -> CostEstimate:
    tokens = 0
    with (Path(snapshot.directory) / "train.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            for message in json.loads(line)["messages"]:
                tokens += len(message["content"]) + TOKENS_PER_MESSAGE
    return CostEstimate(
        tokens, settings.n_epochs, settings.price_per_1k_tokens, settings.finetune_budget
    )


def client_for(settings: ZhipuSettings) -> Any:
    if settings.api_key is None or not settings.api_key.get_secret_value():
        raise NotConfigured("ZHIPU__API_KEY is not set: Zhipu fine-tunes need an API key")
    return zhipuai.ZhipuAI(api_key=settings.api_key.get_secret_value(), base_url=settings.base_url)


@contextmanager
def zhipu_calls() -> Iterator[None]:
    """The SDK's exceptions as AppErrors the front doors know how to show."""
    try:
        yield
    except zhipuai.APIAuthenticationError as error:
        raise NotConfigured(f"Zhipu refused the API key: {error}") from error
    except zhipuai.ZhipuAIError as error:
        raise BackendUnavailable(f"Zhipu did not do it: {error}") from error


async def poll(core: Core) -> list[FineTuneJob]:
    """Look once at every unfinished Zhipu job (for a scheduler); returns those that ended now."""
    pending = await asyncio.to_thread(finetunes.listing, core.engine, BACKEND, unfinished_only=True)
    if not pending:
        return []
    tunes = ZhipuFineTunes(core)
    ended = []
    for job in pending:
        try:
            job = await asyncio.to_thread(tunes.refresh, job)
        except BackendUnavailable as error:
            log.warning("fine-tune job %s: %s; trying again later", job.id, error.message)
            continue
        if job.status in ENDED:
            ended.append(await tunes.finish(job))
    return ended


class ZhipuFineTunes:
    """Launches, polls and cancels Zhipu fine-tune jobs, recording each step in the store."""

    def __init__(self, core: Core, client: Any = None) -> None:
        self._core = core
        self._settings = core.settings.zhipu
        self._client = client or client_for(self._settings)

    def launch(self, snapshot: Snapshot) -> FineTuneJob:
        """The snapshot's job: resumed if it exists and has not ended, launched if within budget."""
        existing = finetunes.of_snapshot(self._core.engine, BACKEND, snapshot.content_hash)
        if existing is not None:
            if existing.finished_at is not None:
                raise Conflict(
                    f"snapshot {snapshot.content_hash[:12]} was fine-tuned already by job "
                    f"{existing.id} ({existing.status}); a snapshot is never trained twice"
                )
            return self.advance(existing)
        cost = estimate(snapshot, self._settings)
        if cost.cost > self._settings.finetune_budget:
            raise OverBudget(f"not launched: {cost.describe()} is over the budget")
        job = finetunes.create(
            self._core.engine,
            FineTuneJob(
                backend=BACKEND,
                snapshot=snapshot.content_hash,
                base_model=self._settings.finetune_base_model,
                hyperparameters=self._hyperparameters(),
                estimated_cost=round(cost.cost, 4),
            ),
        )
        log.info("fine-tune job %s for snapshot %s: %s", job.id, job.snapshot[:12], cost.describe())
        return self.advance(job)

    def advance(self, job: FineTuneJob) -> FineTuneJob:
        """Send what has not been sent yet: the training file, the validation file, the job."""
        with zhipu_calls():
            return self._advance(job)

    def _advance(self, job: FineTuneJob) -> FineTuneJob:
        directory = finetunes.snapshot_directory(self._core.engine, job.snapshot)
        if job.training_file_id is None:
            job = self._save(job, training_file_id=self._upload(directory, job, "train"))
        if job.validation_file_id is None:
            job = self._save(job, validation_file_id=self._upload(directory, job, "validation"))
        if job.external_id is None:
            remote = self._remote_job(job.snapshot) or self._client.fine_tuning.jobs.create(
                model=job.base_model,
                training_file=job.training_file_id,
                validation_file=job.validation_file_id,
                hyperparameters={k: v for k, v in job.hyperparameters.items() if k != "method"},
                suffix=self._settings.finetune_suffix,
                request_id=job.snapshot,
                extra_body={
                    "extra_hyperparameters": {"fine_tuning_method": job.hyperparameters["method"]}
                },
            )
            job = self._save(job, **_remote_fields(remote), external_id=remote.id)
        return job

    def refresh(self, job: FineTuneJob) -> FineTuneJob:
        """Look at the job once and record what changed; on success, register the model."""
        if job.finished_at is not None:
            return job
        if job.external_id is None:
            return self.advance(job)
        with zhipu_calls():
            return self._refresh(job)

    def _refresh(self, job: FineTuneJob) -> FineTuneJob:
        assert job.external_id is not None
        remote = self._client.fine_tuning.jobs.retrieve(job.external_id)
        events = self._client.fine_tuning.jobs.list_events(job.external_id, limit=1).data
        changes = _remote_fields(remote)
        if events:
            changes["last_event"] = _describe_event(events[0])
        status = changes["status"]
        if status == FineTuneStatus.FAILED:
            error = remote.error
            reason = f"{error.code}: {error.message}" if error else "failed without a reason"
            changes |= {"error": reason, "finished_at": utcnow()}
        elif status == FineTuneStatus.CANCELLED:
            changes |= {"error": job.error or "cancelled at Zhipu", "finished_at": utcnow()}
        job = self._save(job, **changes)
        if status == FineTuneStatus.SUCCEEDED and job.model_version_id is None:
            note = f"Zhipu fine-tune job {job.external_id} of {job.base_model}"
            job = finetunes.register_model(self._core.engine, job.id, note)
        return job

    async def finish(self, job: FineTuneJob) -> FineTuneJob:
        """After success: the registered version goes through the promotion gate, which
        evaluates it on the holdout once; then the job is closed."""
        if job.status != FineTuneStatus.SUCCEEDED or job.finished_at is not None:
            return job
        assert job.model_version_id is not None
        version = await asyncio.to_thread(registry.get, self._core.engine, job.model_version_id)
        note = f"model version {version.id} is {version.status}"
        if version.status == ModelStatus.CANDIDATE:
            decision = await gate.judge(self._core, version)
            note = f"{'promoted' if decision.promote else 'not promoted'}: {decision.reason}"
        return await asyncio.to_thread(
            self._save, job, finished_at=utcnow(), last_event=f"{job.last_event}; {note}"
        )

    async def wait(
        self, job: FineTuneJob, on_change: Callable[[FineTuneJob], None] = lambda job: None
    ) -> FineTuneJob:
        """Poll every ``ZHIPU__POLL_INTERVAL_S`` until the job ended and its outcome is recorded."""
        while True:
            try:
                job = await asyncio.to_thread(self.refresh, job)
            except BackendUnavailable as error:
                log.warning("fine-tune job %s: %s; trying again later", job.id, error.message)
            on_change(job)
            if job.status in ENDED:
                job = await self.finish(job)
                on_change(job)
                return job
            await asyncio.sleep(self._settings.poll_interval_s)

    async def resume(
        self, on_change: Callable[[FineTuneJob], None] = lambda job: None
    ) -> list[FineTuneJob]:
        """Wait for every job whose outcome is not recorded yet (after a restart, say)."""
        pending = await asyncio.to_thread(
            finetunes.listing, self._core.engine, BACKEND, unfinished_only=True
        )
        return list(await asyncio.gather(*(self.wait(job, on_change) for job in pending)))

    def cancel(self, job: FineTuneJob) -> FineTuneJob:
        if job.finished_at is not None or job.status in ENDED:
            raise Conflict(f"fine-tune job {job.id} has ended already ({job.status})")
        if job.external_id is not None:
            with zhipu_calls():
                remote = self._client.fine_tuning.jobs.cancel(job.external_id)
            job = self._save(job, **_remote_fields(remote))
        return self._save(
            job, status=FineTuneStatus.CANCELLED, error="cancelled by hand", finished_at=utcnow()
        )

    def _hyperparameters(self) -> dict[str, Any]:
        s = self._settings
        return {
            "n_epochs": s.n_epochs,
            "batch_size": s.batch_size,
            "learning_rate_multiplier": s.learning_rate_multiplier,
            "method": s.finetune_method,
        }

    def _upload(self, directory: Path, job: FineTuneJob, part: str) -> str:
        """Upload ``part``.jsonl, or find it uploaded already (same name and size)."""
        path = directory / f"{part}.jsonl"
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise Conflict(f"{path} has {size:,} bytes; Zhipu takes at most {MAX_FILE_BYTES:,}")
        name = f"waimai-{job.snapshot[:16]}-{part}.jsonl"
        for file in self._client.files.list(purpose="fine-tune").data:
            if file.filename == name and file.bytes == size:
                return str(file.id)
        uploaded = self._client.files.create(file=(name, path.read_bytes()), purpose="fine-tune")
        return str(uploaded.id)

    def _remote_job(self, request_id: str) -> Any:
        """The job at Zhipu created with ``request_id``, if any (paging through the list)."""
        after = None
        while True:
            page = self._client.fine_tuning.jobs.list(**({"after": after} if after else {}))
            for remote in page.data:
                if remote.request_id == request_id:
                    return remote
            if not page.has_more or not page.data:
                return None
            after = page.data[-1].id

    def _save(self, job: FineTuneJob, **changes: Any) -> FineTuneJob:
        return finetunes.update(self._core.engine, job.id, **changes)


def _remote_fields(remote: Any) -> dict[str, Any]:
    return {
        "status": local_status(str(remote.status)),
        "remote_status": str(remote.status)[:64],
        "fine_tuned_model": remote.fine_tuned_model,
        "trained_tokens": remote.trained_tokens,
    }


QUEUED = frozenset({"created", "pending", "queued", "validating_files"})
"""What providers call a job that waits its turn: Zhipu's ``created`` and ``pending`` (排队中
in its console), OpenAI-style ``queued`` and ``validating_files``."""


def local_status(remote: str) -> FineTuneStatus:
    """A provider's job status as ours: the terminal ones as they are, a waiting one as created,
    and every other (``running``, or one nobody told us of) as running: not finished, so polled
    again."""
    if remote in ENDED:
        return FineTuneStatus(remote)
    return FineTuneStatus.CREATED if remote in QUEUED else FineTuneStatus.RUNNING


def _describe_event(event: Any) -> str:
    data = event.data
    if data is not None and data.loss is not None:
        return f"{event.message} (epoch {data.epoch}, loss {data.loss})"
    return str(event.message or event.type or "")
