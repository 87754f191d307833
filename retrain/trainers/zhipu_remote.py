"""A Zhipu fine-tune as the API sees it: the client, what is sent, what is found there again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zhipuai

from core.config import ZhipuSettings
from core.store.tables import FineTuneJob, FineTuneStatus
from retrain.trainers.zhipu_errors import FineTuneRefused, NotConfigured

MAX_FILE_BYTES = 100 * 1024 * 1024
REQUEST_TIMEOUT_S = 300.0
"""Long enough to upload a 100 MB training file."""
SENT_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
"""What the SDK's ``job_create_params.Hyperparameters`` defines. The LoRA/full switch is in
neither the SDK nor Zhipu's docs, so it is not sent: ZHIPU__FINETUNE_METHOD says which kind the
base model's jobs produce."""
ENDED = frozenset({FineTuneStatus.SUCCEEDED, FineTuneStatus.FAILED, FineTuneStatus.CANCELLED})
QUEUED = frozenset({"created", "pending", "queued", "validating_files"})
"""What providers call a job that waits its turn: Zhipu's ``created`` and ``pending`` (排队中
in its console), OpenAI-style ``queued`` and ``validating_files``."""


def client_for(settings: ZhipuSettings) -> Any:
    """The SDK's client, its own retries off: the next look (every ZHIPU__POLL_INTERVAL_S) is the
    retry, and the SDK's would send a quota refusal four times."""
    if settings.api_key is None or not settings.api_key.get_secret_value():
        raise NotConfigured("ZHIPU__API_KEY is not set: Zhipu fine-tunes need an API key")
    return zhipuai.ZhipuAI(
        api_key=settings.api_key.get_secret_value(),
        base_url=settings.base_url,
        timeout=REQUEST_TIMEOUT_S,
        max_retries=0,
    )


def request_id(job: FineTuneJob) -> str:
    """The snapshot hash for a first attempt; marked with the attempt for the next ones."""
    return job.snapshot if job.attempt == 1 else f"{job.snapshot[:48]}-attempt-{job.attempt}"


def upload(client: Any, path: Path, job: FineTuneJob) -> str:
    """Upload a snapshot file for ``job``, or find it uploaded already (same name and size)."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise FineTuneRefused(
            f"{path} has {size:,} bytes; Zhipu takes at most {MAX_FILE_BYTES:,} (it answers 435 "
            "to a larger file)"
        )
    name = f"waimai-{job.snapshot[:16]}-{path.name}"
    for file in client.files.list(purpose="fine-tune").data:
        if file.filename == name and file.bytes == size:
            return str(file.id)
    uploaded = client.files.create(file=(name, path.read_bytes()), purpose="fine-tune")
    return str(uploaded.id)


def find_job(client: Any, request: str) -> Any:
    """The job at Zhipu created with request id ``request``, if any (paging through the list)."""
    after = None
    while True:
        page = client.fine_tuning.jobs.list(**({"after": after} if after else {}))
        for remote in page.data:
            if remote.request_id == request:
                return remote
        if not page.has_more or not page.data:
            return None
        after = page.data[-1].id


def remote_fields(remote: Any) -> dict[str, Any]:
    return {
        "status": local_status(str(remote.status)),
        "remote_status": str(remote.status)[:64],
        "fine_tuned_model": remote.fine_tuned_model,
        "trained_tokens": remote.trained_tokens,
    }


def local_status(remote: str) -> FineTuneStatus:
    """A provider's job status as ours: the terminal ones as they are, a waiting one as created,
    and every other (``running``, or one nobody told us of) as running: not finished, so polled
    again."""
    if remote in ENDED:
        return FineTuneStatus(remote)
    return FineTuneStatus.CREATED if remote in QUEUED else FineTuneStatus.RUNNING
