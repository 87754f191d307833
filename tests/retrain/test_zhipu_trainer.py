"""Zhipu fine-tune jobs through the real SDK against the fake Zhipu: the whole lifecycle."""

import json
import re
import time
from pathlib import Path

import pytest
import zhipuai
from sqlmodel import Session, select

from core.errors import Conflict
from core.models import finetunes, registry
from core.models.dataset import load_split
from core.store.tables import FineTuneJob, FineTuneStatus, ModelStatus, Snapshot, Split
from core.wiring import Core
from retrain.registration import add_model
from retrain.snapshot import take_snapshot
from retrain.trainers.zhipu import OverBudget, ZhipuFineTunes, estimate
from serving.base import BackendError
from tests.fakes.zhipu_fixtures import (  # noqa: F401  (pytest fixtures)
    fake_zhipu_fixture,
    small_store_fixture,
    zhipu_core_fixture,
    zhipu_settings,
)
from tests.fakes.zhipu_server import Fault, keyword_rule


class StepClock:
    """The fake's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def snapshot_of(core: Core) -> Snapshot:
    return take_snapshot(core.engine, core.settings.data.dir / "snapshots")


def keyword_accuracy(core: Core) -> float:
    """What the fake's answer rule scores on the holdout, computed directly."""
    texts, labels = load_split(core.engine, Split.TEST)
    right = sum(keyword_rule(text) == label.zh for text, label in zip(texts, labels, strict=True))
    return round(right / len(texts), 4)


def stored_jobs(core: Core) -> list[FineTuneJob]:
    with Session(core.engine) as session:
        return list(session.exec(select(FineTuneJob)).all())


async def test_a_fine_tune_goes_from_upload_to_an_evaluated_candidate(zhipu_core, fake_zhipu):
    clock = StepClock()
    fake_zhipu.clock = clock
    snapshot = snapshot_of(zhipu_core)
    job = ZhipuFineTunes(zhipu_core).launch(snapshot)

    assert job.external_id in fake_zhipu.jobs
    assert job.status == FineTuneStatus.CREATED
    assert re.fullmatch(r"glm-4-flash:\d+:waimai:[a-z0-9]{8}", job.fine_tuned_model or "")
    remote = fake_zhipu.jobs[job.external_id]
    assert remote.request_id == snapshot.content_hash
    assert remote.hyperparameters == {
        "n_epochs": 3,
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
    }
    assert remote.method == "lora"
    uploaded = {f.filename: f for f in fake_zhipu.files.values()}
    train = uploaded[f"waimai-{snapshot.content_hash[:16]}-train.jsonl"]
    assert train.purpose == "fine-tune"
    assert train.content == (Path(snapshot.directory) / "train.jsonl").read_bytes()
    assert f"waimai-{snapshot.content_hash[:16]}-validation.jsonl" in uploaded

    seen: list[str] = []

    def look(job: FineTuneJob) -> None:
        seen.append(job.status)
        clock.now += 0.25  # the fake's job: queued for 0.2 s, then training for 0.4 s

    job = await ZhipuFineTunes(zhipu_core).wait(job, look)
    assert seen == ["created", "running", "running", "succeeded", "succeeded"]
    assert job.status == FineTuneStatus.SUCCEEDED
    assert job.finished_at is not None
    assert job.trained_tokens and job.trained_tokens > 0
    assert "训练完成" in job.last_event and "not promoted" in job.last_event

    version = registry.get(zhipu_core.engine, job.model_version_id or 0)
    assert (version.backend, version.model_ref) == ("zhipu", job.fine_tuned_model)
    assert version.status == ModelStatus.REJECTED, "the gate compared it with the local model"
    assert version.metrics["gate"]["active_accuracy"] > version.metrics["accuracy"]
    assert version.snapshot == snapshot.content_hash
    assert version.metrics["n"] == len(load_split(zhipu_core.engine, Split.TEST)[0])
    assert version.metrics["accuracy"] == keyword_accuracy(zhipu_core)
    assert version.metrics["ece"] is None, "no confidence: no calibration figure"


@pytest.mark.parametrize("queued", ["pending", "queued", "validating_files", "warming_up"])
async def test_any_status_that_is_not_final_is_polled_again_and_kept_word_for_word(
    zhipu_core, fake_zhipu, queued
):
    clock = StepClock()
    fake_zhipu.clock = clock
    fake_zhipu.queued_status = queued
    tunes = ZhipuFineTunes(zhipu_core)
    job = tunes.refresh(tunes.launch(snapshot_of(zhipu_core)))

    assert job.finished_at is None and job.remote_status == queued
    assert job.status == (FineTuneStatus.RUNNING if queued == "warming_up" else "created")
    assert job.id in [
        j.id for j in finetunes.listing(zhipu_core.engine, "zhipu", unfinished_only=True)
    ]
    clock.now += 1.0
    job = tunes.refresh(job)
    assert (job.status, job.remote_status) == (FineTuneStatus.SUCCEEDED, "succeeded")


async def test_a_restart_mid_job_resumes_it_and_never_launches_a_second(zhipu_core, fake_zhipu):
    snapshot = snapshot_of(zhipu_core)
    first = ZhipuFineTunes(zhipu_core)
    job = first.refresh(first.launch(snapshot))
    assert job.finished_at is None
    del first  # the process dies here

    restarted = Core(zhipu_core.settings)
    tunes = ZhipuFineTunes(restarted)
    assert tunes.launch(snapshot_of(restarted)).id == job.id, "the same job, not a new one"
    (done,) = await tunes.resume()
    assert done.id == job.id
    assert done.status == FineTuneStatus.SUCCEEDED
    assert done.model_version_id is not None
    assert len(fake_zhipu.jobs) == 1
    assert len(stored_jobs(restarted)) == 1
    with pytest.raises(Conflict, match="never trained twice"):
        tunes.launch(snapshot)
    assert await tunes.resume() == []
    restarted.engine.dispose()


def test_a_crash_before_the_job_id_was_recorded_finds_the_job_by_request_id(zhipu_core, fake_zhipu):
    tunes = ZhipuFineTunes(zhipu_core)
    job = tunes.launch(snapshot_of(zhipu_core))
    lost = finetunes.update(
        zhipu_core.engine,
        job.id,
        external_id=None,
        training_file_id=None,
        status=FineTuneStatus.UPLOADING,
    )

    found = ZhipuFineTunes(Core(zhipu_core.settings)).refresh(lost)
    assert found.external_id == job.external_id
    assert found.training_file_id == job.training_file_id, "the uploaded file is reused"
    assert len(fake_zhipu.jobs) == 1
    assert len(fake_zhipu.files) == 2


async def test_a_failed_job_records_why_and_registers_nothing(zhipu_core, fake_zhipu):
    fake_zhipu.job_outcome = "failed"
    tunes = ZhipuFineTunes(zhipu_core)
    job = await tunes.wait(tunes.launch(snapshot_of(zhipu_core)))
    assert job.status == FineTuneStatus.FAILED
    assert "1500" in (job.error or "") and "NaN" in (job.error or "")
    assert job.finished_at is not None
    assert job.model_version_id is None
    assert [v.backend for v in registry.list_versions(zhipu_core.engine)] == ["local"]


def test_a_job_can_be_cancelled_once(zhipu_core, fake_zhipu):
    fake_zhipu.train_s = 60
    tunes = ZhipuFineTunes(zhipu_core)
    job = tunes.cancel(tunes.launch(snapshot_of(zhipu_core)))
    assert job.status == FineTuneStatus.CANCELLED
    assert job.error == "cancelled by hand"
    assert fake_zhipu.jobs[job.external_id or ""].cancelled_at is not None
    client = zhipuai.ZhipuAI(api_key=fake_zhipu.api_key, base_url=fake_zhipu.base_url)
    assert client.fine_tuning.jobs.list_events(job.external_id).data[0].message == "任务已取消"
    with pytest.raises(Conflict, match="ended already"):
        tunes.cancel(job)


async def test_polling_survives_a_failing_look_at_the_job(zhipu_core, fake_zhipu):
    client = zhipuai.ZhipuAI(
        api_key=fake_zhipu.api_key, base_url=fake_zhipu.base_url, max_retries=0
    )
    tunes = ZhipuFineTunes(zhipu_core, client=client)
    job = tunes.launch(snapshot_of(zhipu_core))
    fake_zhipu.inject(Fault.error(500, "500", count=2, path=job.external_id or ""))
    assert (await tunes.wait(job)).status == FineTuneStatus.SUCCEEDED
    assert fake_zhipu.refusals[500] == 2


def test_above_the_budget_nothing_is_sent_and_it_says_why(zhipu_core, fake_zhipu):
    settings = zhipu_core.settings.model_copy(
        update={"zhipu": zhipu_settings(fake_zhipu, finetune_budget=0.01)}
    )
    with pytest.raises(OverBudget, match=r"tokens × 3 epochs .* yuan .* over the budget"):
        ZhipuFineTunes(Core(settings)).launch(snapshot_of(zhipu_core))
    assert not fake_zhipu.files
    assert not fake_zhipu.jobs
    assert not stored_jobs(zhipu_core)


def test_the_estimate_is_training_tokens_times_epochs_times_price(zhipu_core, fake_zhipu):
    snapshot = snapshot_of(zhipu_core)
    lines = (Path(snapshot.directory) / "train.jsonl").read_text(encoding="utf-8").splitlines()
    tokens = sum(
        len(message["content"]) + 4 for line in lines for message in json.loads(line)["messages"]
    )
    cost = estimate(snapshot, zhipu_settings(fake_zhipu, price_per_1k_tokens=0.5, n_epochs=2))
    assert (cost.tokens_per_epoch, cost.epochs) == (tokens, 2)
    assert cost.cost == pytest.approx(tokens * 2 / 1000 * 0.5)


async def test_a_zhipu_model_is_added_and_evaluated_through_the_whole_stack(zhipu_core):
    version = await add_model(zhipu_core, "zhipu", "glm-4-flash", evaluate_it=True)
    assert (version.backend, version.model_ref, version.status) == (
        "zhipu",
        "glm-4-flash",
        ModelStatus.CANDIDATE,
    )
    assert version.metrics["accuracy"] == keyword_accuracy(zhipu_core)


async def test_a_deleted_fine_tuned_model_no_longer_answers(zhipu_core, fake_zhipu):
    tunes = ZhipuFineTunes(zhipu_core)
    job = await tunes.wait(tunes.launch(snapshot_of(zhipu_core)))
    client = zhipuai.ZhipuAI(api_key=fake_zhipu.api_key, base_url=fake_zhipu.base_url)
    deleted = client.fine_tuning.models.delete(job.fine_tuned_model)
    assert (deleted.model_name, deleted.delete_status) == (job.fine_tuned_model, "deleting")
    version = registry.get(zhipu_core.engine, job.model_version_id or 0)
    with pytest.raises(BackendError, match="1211"):
        await zhipu_core.backends.for_version(version).classify(["好吃"])
    assert client.fine_tuning.jobs.delete(job.external_id).status == "succeeded"
    assert client.files.delete(job.training_file_id).deleted is True
    assert client.fine_tuning.jobs.list().data == []
