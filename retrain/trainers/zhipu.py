"""Zhipu fine-tune jobs: upload a snapshot, launch a job, poll it until it ends; restarts resume.

A job's FineTuneJob row is written before anything is sent, each step's result (file ids, then
the job id) is recorded as soon as it is known, and the snapshot hash (with the attempt) is the
job's request id: a process that died between creating the job and recording it finds the job
again instead of launching a second one. Whether a job is worth its cost is decided before it is
recorded (zhipu_budget.py). A refusal Zhipu would repeat ends the job, and the admins hear of it
once; a used-up quota or a locked account pauses every Zhipu fine-tune until the reset time Zhipu
states (zhipu_errors.py). A snapshot whose job failed or was cancelled is launched again only on
purpose (``waimai finetune zhipu --retry``), as the next attempt.

On success a LoRA fine-tune's model is registered as a candidate version, with the loss curves
read while it trained, and goes through the promotion gate. Any other fine-tune answers only once
deployed in Zhipu's console, under a model code of its own (Zhipu's fine-tuning guide): the
admins are told to add that code (``waimai models add zhipu CODE --job ID``); nothing is
registered before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from core.errors import BackendUnavailable, Conflict
from core.models import finetunes, registry
from core.store.outbox import FineTuneNotice
from core.store.tables import FineTuneJob, FineTuneStatus, ModelStatus, Snapshot, as_utc
from core.wiring import Core
from retrain.trainers.zhipu_budget import BACKEND, approve, estimate
from retrain.trainers.zhipu_errors import (
    FineTunePaused,
    FineTuneRefused,
    NotConfigured,
    zhipu_calls,
)
from retrain.trainers.zhipu_events import describe, events_since, with_losses
from retrain.trainers.zhipu_remote import (
    ENDED,
    REQUEST_TIMEOUT_S,
    SENT_HYPERPARAMETERS,
    client_for,
    find_job,
    remote_fields,
    request_id,
    upload,
)

log = logging.getLogger(__name__)


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
        except (BackendUnavailable, NotConfigured) as error:
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

    def launch(self, snapshot: Snapshot, *, retry: bool = False) -> FineTuneJob:
        """The snapshot's job: resumed if it has not ended, else launched if it is worth its
        cost; after a failed or cancelled job only with ``retry``. Raises what stops it."""
        self._raise_if_paused()
        existing = finetunes.of_snapshot(self._core.engine, BACKEND, snapshot.content_hash)
        if existing is not None and existing.finished_at is None:
            return self._launched(self.advance(existing))
        if existing is not None and existing.status == FineTuneStatus.SUCCEEDED:
            raise Conflict(
                f"snapshot {snapshot.content_hash[:12]} was fine-tuned already by job "
                f"{existing.id}; a snapshot is never trained twice"
            )
        if existing is not None and not retry:
            raise Conflict(
                f"fine-tune job {existing.id} of snapshot {snapshot.content_hash[:12]} is "
                f"{existing.status}: {existing.error}. `waimai finetune zhipu --retry` launches "
                "it again"
            )
        cost = estimate(snapshot, self._settings)
        approve(self._core, snapshot, cost)
        job = finetunes.create(
            self._core.engine,
            FineTuneJob(
                backend=BACKEND,
                snapshot=snapshot.content_hash,
                attempt=existing.attempt + 1 if existing is not None else 1,
                base_model=self._settings.finetune_base_model,
                hyperparameters=self._hyperparameters(),
                estimated_cost=round(cost.cost, 4),
            ),
        )
        log.info("fine-tune job %s for snapshot %s: %s", job.id, job.snapshot[:12], cost.describe())
        return self._launched(self.advance(job))

    def advance(self, job: FineTuneJob) -> FineTuneJob:
        """Send what has not been sent yet: the training file, the validation file, the job."""
        return self._guarded(job, self._advance)

    def refresh(self, job: FineTuneJob) -> FineTuneJob:
        """Look at the job once and record what changed; on success, register the model if it
        can answer as it is. Nothing is sent while fine-tunes are paused."""
        if job.finished_at is not None or finetunes.paused(self._core.engine, BACKEND):
            return job
        if job.external_id is None:
            return self.advance(job)
        return self._guarded(job, self._refresh)

    async def finish(self, job: FineTuneJob) -> FineTuneJob:
        """After success: the registered version goes through the promotion gate, which
        evaluates it on the holdout once; a model that must be deployed first is announced to
        the admins. Then the job is closed."""
        if job.status != FineTuneStatus.SUCCEEDED or job.finished_at is not None:
            return job
        if job.model_version_id is None:
            reason = (
                f"{job.fine_tuned_model} is a {job.hyperparameters.get('method')} fine-tune, "
                "which Zhipu serves only once deployed: deploy it in Zhipu's console (私有实例, "
                f"创建部署任务), then `waimai models add zhipu <its model code> --job {job.id}`"
            )
            notice = FineTuneNotice("deploy", job.id, reason)
            return await asyncio.to_thread(
                finetunes.end, self._core.engine, job.id, notice, last_event=reason
            )
        version = await asyncio.to_thread(registry.get, self._core.engine, job.model_version_id)
        note = f"model version {version.id} is {version.status}"
        if version.status == ModelStatus.CANDIDATE:
            decision = await self._core.gate.judge(version)
            note = f"{'promoted' if decision.promote else 'not promoted'}: {decision.reason}"
        return await asyncio.to_thread(
            finetunes.end, self._core.engine, job.id, last_event=f"{job.last_event}; {note}"
        )

    async def wait(
        self, job: FineTuneJob, on_change: Callable[[FineTuneJob], None] = lambda job: None
    ) -> FineTuneJob:
        """Poll every ``ZHIPU__POLL_INTERVAL_S`` until the job ended and its outcome is recorded,
        or until fine-tunes are paused (the worker takes it up again after the pause)."""
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
            if await asyncio.to_thread(finetunes.paused, self._core.engine, BACKEND):
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
            with self._calls():
                remote = self._client.fine_tuning.jobs.cancel(job.external_id)
            job = self._save(job, **remote_fields(remote))
        return finetunes.end(
            self._core.engine, job.id, status=FineTuneStatus.CANCELLED, error="cancelled by hand"
        )

    def _advance(self, job: FineTuneJob) -> FineTuneJob:
        directory = finetunes.snapshot_directory(self._core.engine, job.snapshot)
        if job.training_file_id is None:
            training = upload(self._client, directory / "train.jsonl", job)
            job = self._save(job, training_file_id=training)
        if job.validation_file_id is None:
            validation = upload(self._client, directory / "validation.jsonl", job)
            job = self._save(job, validation_file_id=validation)
        if job.external_id is None:
            remote = find_job(self._client, request_id(job)) or self._create(job)
            job = self._save(job, **remote_fields(remote), external_id=remote.id)
        return job

    def _create(self, job: FineTuneJob) -> Any:
        """Create the job at Zhipu, with only the parameters the SDK defines."""
        return self._client.fine_tuning.jobs.create(
            model=job.base_model,
            training_file=job.training_file_id,
            validation_file=job.validation_file_id,
            hyperparameters={
                name: job.hyperparameters[name]
                for name in SENT_HYPERPARAMETERS
                if name in job.hyperparameters
            },
            suffix=self._settings.finetune_suffix,
            request_id=request_id(job),
        )

    def _refresh(self, job: FineTuneJob) -> FineTuneJob:
        assert job.external_id is not None
        remote = self._client.fine_tuning.jobs.retrieve(job.external_id)
        changes = remote_fields(remote)
        events = events_since(self._client, job.external_id, job.newest_event_id)
        if events:
            changes |= {
                "curves": with_losses(job.curves, events),
                "newest_event_id": events[-1].id,
                "last_event": describe(events[-1]),
            }
        status = changes["status"]
        if status == FineTuneStatus.FAILED:
            error = remote.error
            why = f"{error.code}: {error.message}" if error else "failed without a reason"
            notice = FineTuneNotice("failed", job.id, why)
            retry = f"; `waimai finetune zhipu --retry` launches snapshot {job.snapshot[:12]} again"
            return finetunes.end(self._core.engine, job.id, notice, **changes, error=why + retry)
        if status == FineTuneStatus.CANCELLED:
            error_text = job.error or "cancelled at Zhipu"
            return finetunes.end(self._core.engine, job.id, **changes, error=error_text)
        job = self._save(job, **changes)
        lora = job.hyperparameters.get("method", "lora") == "lora"
        if status == FineTuneStatus.SUCCEEDED and lora and job.model_version_id is None:
            note = f"Zhipu fine-tune job {job.external_id} of {job.base_model}"
            job = finetunes.register_model(self._core.engine, job.id, note)
        return job

    def _guarded(self, job: FineTuneJob, step: Callable[[FineTuneJob], FineTuneJob]) -> FineTuneJob:
        """``step`` done, or the job ended (a refusal for good) or paused, as Zhipu answered."""
        try:
            with self._calls():
                job = step(job)
        except FineTuneRefused as refusal:
            notice = FineTuneNotice("refused", job.id, refusal.message)
            error = (
                f"Zhipu refused it: {refusal.message}; nothing retries it. `waimai finetune "
                f"zhipu --retry` launches snapshot {job.snapshot[:12]} again"
            )
            return finetunes.end(
                self._core.engine, job.id, notice, status=FineTuneStatus.FAILED, error=error
            )
        except FineTunePaused as pause:
            notice = FineTuneNotice("paused", job.id, pause.message)
            reason = f"paused: {pause.message}"
            return finetunes.pause(self._core.engine, job.id, pause.until, reason, notice)
        if job.paused_until is not None and job.finished_at is None:
            job = self._save(job, paused_until=None)  # Zhipu answers again
        return job

    def _launched(self, job: FineTuneJob) -> FineTuneJob:
        """``job`` as launching left it, or the reason it did not start raised."""
        if job.status == FineTuneStatus.FAILED:
            raise FineTuneRefused(f"fine-tune job {job.id}: {job.error}")
        self._raise_if_paused()
        return job

    def _raise_if_paused(self) -> None:
        paused = finetunes.paused(self._core.engine, BACKEND)
        if paused is not None and paused.paused_until is not None:
            until = as_utc(paused.paused_until)
            raise FineTunePaused(
                f"Zhipu fine-tunes wait until {until:%Y-%m-%d %H:%M} UTC (job {paused.id}: "
                f"{paused.last_event})",
                until=until,
            )

    @contextmanager
    def _calls(self) -> Iterator[None]:
        with zhipu_calls(
            self._settings.finetune_base_model, self._settings.account_pause_s, REQUEST_TIMEOUT_S
        ):
            yield

    def _hyperparameters(self) -> dict[str, Any]:
        s = self._settings
        return {
            "n_epochs": s.n_epochs,
            "batch_size": s.batch_size,
            "learning_rate_multiplier": s.learning_rate_multiplier,
            "method": s.finetune_method,
        }

    def _save(self, job: FineTuneJob, **changes: Any) -> FineTuneJob:
        return finetunes.update(self._core.engine, job.id, **changes)
