"""Zhipu fine-tune jobs through the real SDK against the fake Zhipu: the whole lifecycle, and
what Zhipu's refusals, quotas, full fine-tunes and the budgets make of it."""

import asyncio
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import zhipuai
from sklearn.model_selection import train_test_split
from sqlmodel import Session, select

from core.classify.service import ReviewInput
from core.config import ZhipuSettings
from core.errors import Conflict
from core.models import finetunes, registry
from core.models.dataset import load_split, write_jsonl
from core.store.tables import (
    ActorRole,
    FineTuneJob,
    FineTuneStatus,
    ModelStatus,
    Notification,
    Snapshot,
    Source,
    Split,
    as_utc,
)
from core.wiring import Core
from retrain.cycle import run_cycle
from retrain.registration import add_model
from retrain.snapshot import take_snapshot
from retrain.trainers.zhipu import ZhipuFineTunes, poll
from retrain.trainers.zhipu_budget import estimate
from retrain.trainers.zhipu_errors import (
    FineTunePaused,
    FineTuneRefused,
    OverBudget,
    TooFewNewLabels,
)
from serving.base import BackendError, Label, Verdict
from tests.conftest import DATASET
from tests.fakes.zhipu_errors import quota_message
from tests.fakes.zhipu_fixtures import (  # noqa: F401  (pytest fixtures)
    fake_zhipu_fixture,
    small_store_fixture,
    zhipu_core_fixture,
    zhipu_settings,
)
from tests.fakes.zhipu_jobs import METRIC_STEPS, deploy, train_loss, validation_loss
from tests.fakes.zhipu_server import FakeZhipu, Fault, keyword_rule

DOCUMENTED_PARAMETERS = {
    "model",
    "training_file",
    "validation_file",
    "hyperparameters",
    "suffix",
    "request_id",
}
"""What the SDK's ``fine_tuning.jobs.create`` sends."""


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


def notices(core: Core) -> list[dict[str, Any]]:
    """What the admins were told of fine-tunes (the outbox's FineTuneNotice payloads)."""
    with Session(core.engine) as session:
        rows = session.exec(select(Notification).where(Notification.kind == "FineTuneNotice"))
        return [row.payload for row in rows]


def core_with(core: Core, fake: FakeZhipu, **zhipu: object) -> Core:
    """A core on the same store whose Zhipu settings differ."""
    settings = core.settings.model_copy(update={"zhipu": zhipu_settings(fake, **zhipu)})
    return Core(settings)


async def label_as_admin(core: Core, n: int, start: int = 0) -> None:
    """``n`` new reviews, each labelled by an admin: new examples of the shared training set."""
    items = [ReviewInput(f"第{i}单：送来的饭菜很香，下次还点") for i in range(start, start + n)]
    results = await core.classification.classify(items, source=Source.API, tenant="shop")
    for result in results:
        await core.feedback.record(
            result.review_id,
            Label.POSITIVE,
            actor="boss",
            channel=Source.API,
            role=ActorRole.ADMIN,
        )


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
    assert set(remote.request) <= DOCUMENTED_PARAMETERS, "only what the SDK defines is sent"
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
    (batch,) = fake_zhipu.batch.batches.values()
    assert len(batch.requests) == version.metrics["n"], "the holdout went as one batch"
    assert sum(fake_zhipu.answered.values()) == fake_zhipu.batch.answered, "none one by one"

    steps = range(1, METRIC_STEPS * 3 + 1)
    assert version.metrics["curves"] == {
        "train": [{"step": s, "epoch": s / METRIC_STEPS, "loss": train_loss(s)} for s in steps],
        "validation": [
            {"step": s, "epoch": s / METRIC_STEPS, "loss": validation_loss(s)}
            for s in steps
            if s % METRIC_STEPS == 0
        ],
    }, "every loss Zhipu reported while the job ran, read over several looks"


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


REFUSALS = {
    "no balance": Fault.error(429, "1113", count=None, path="/fine_tuning/jobs"),
    "fine-tuning not open to the account": Fault.error(
        404, "1600", count=None, path="/fine_tuning/jobs", message="微调功能未开放，请联系客服开放"
    ),
    "no access to the file API": Fault.error(
        434, "434", count=None, path="/files", message="暂无 API 权限，文件管理 API 为内测阶段"
    ),
    "file too large": Fault.error(
        435, "435", count=None, path="/files", message="文件大小超过 100MB"
    ),
    "no access": Fault.error(403, "1220", count=None, path="/fine_tuning/jobs"),
}


@pytest.mark.parametrize("fault", REFUSALS.values(), ids=REFUSALS.keys())
async def test_a_refusal_zhipu_would_repeat_fails_the_job_once_and_nothing_retries_it(
    zhipu_core, fake_zhipu, fault
):
    fake_zhipu.inject(fault)
    snapshot = snapshot_of(zhipu_core)
    with pytest.raises(FineTuneRefused, match=fault.code):
        ZhipuFineTunes(zhipu_core).launch(snapshot)

    (job,) = stored_jobs(zhipu_core)
    assert job.status == FineTuneStatus.FAILED and job.finished_at is not None
    assert fault.code in (job.error or "") and "--retry" in (job.error or "")
    refusals = sum(fake_zhipu.refusals.values())
    for _ in range(3):
        assert await poll(zhipu_core) == []
    with pytest.raises(Conflict, match="--retry"):
        ZhipuFineTunes(zhipu_core).launch(snapshot)
    assert sum(fake_zhipu.refusals.values()) == refusals, "nothing was sent again"
    (told,) = notices(zhipu_core)
    assert (told["kind"], told["job_id"]) == ("refused", job.id)
    assert fault.code in told["reason"]


@pytest.mark.parametrize(
    ("setting", "code", "said"),
    [
        ({"batch_size": 0}, "1214", "hyperparameters.batch_size 参数非法"),
        ({"finetune_base_model": "glm-4-flash-250414"}, "1211", "模型不存在"),
    ],
    ids=["bad parameter", "model not found"],
)
def test_a_job_zhipu_will_not_create_fails_with_zhipus_code_and_message(
    zhipu_core, fake_zhipu, setting, code, said
):
    tunes = ZhipuFineTunes(core_with(zhipu_core, fake_zhipu, **setting))
    with pytest.raises(FineTuneRefused, match=code):
        tunes.launch(snapshot_of(zhipu_core))
    (job,) = stored_jobs(zhipu_core)
    assert job.status == FineTuneStatus.FAILED
    assert code in (job.error or "") and said in (job.error or "")
    assert not fake_zhipu.jobs
    assert [told["kind"] for told in notices(zhipu_core)] == ["refused"]


async def test_a_failed_snapshot_is_launched_again_only_with_retry(zhipu_core, fake_zhipu):
    fake_zhipu.inject(Fault.error(429, "1113", count=None, path="/fine_tuning/jobs"))
    snapshot = snapshot_of(zhipu_core)
    tunes = ZhipuFineTunes(zhipu_core)
    with pytest.raises(FineTuneRefused, match="1113"):
        tunes.launch(snapshot)
    with pytest.raises(Conflict, match=r"is failed: .*1113.*--retry"):
        tunes.launch(snapshot)

    fake_zhipu.faults.clear()  # the account was topped up
    job = tunes.launch(snapshot, retry=True)
    assert (job.attempt, job.status) == (2, FineTuneStatus.CREATED)
    remote = fake_zhipu.jobs[job.external_id or ""]
    assert remote.request_id == f"{snapshot.content_hash[:48]}-attempt-2"
    done = await tunes.wait(job)
    assert done.status == FineTuneStatus.SUCCEEDED and done.model_version_id is not None
    assert [j.status for j in stored_jobs(zhipu_core)] == ["failed", "succeeded"]


async def test_a_cancelled_job_does_not_block_its_snapshot_for_ever(zhipu_core, fake_zhipu):
    fake_zhipu.train_s = 60
    snapshot = snapshot_of(zhipu_core)
    tunes = ZhipuFineTunes(zhipu_core)
    tunes.cancel(tunes.launch(snapshot))
    with pytest.raises(Conflict, match="is cancelled"):
        tunes.launch(snapshot)
    fake_zhipu.train_s = 0.4
    again = tunes.launch(snapshot, retry=True)
    assert again.attempt == 2 and len(fake_zhipu.jobs) == 2


async def test_a_used_up_quota_pauses_fine_tunes_until_zhipus_reset_time(zhipu_core, fake_zhipu):
    snapshot = snapshot_of(zhipu_core)
    tunes = ZhipuFineTunes(zhipu_core)
    job = tunes.launch(snapshot)
    resets_at = int(time.time()) + 2
    message = quota_message("1308", resets_at)
    fake_zhipu.inject(
        Fault.error(429, "1308", count=None, path=job.external_id or "", message=message)
    )

    assert await poll(zhipu_core) == []
    job = finetunes.find(zhipu_core.engine, str(job.id))
    assert as_utc(job.paused_until or datetime.min) == datetime.fromtimestamp(resets_at, UTC)
    assert job.finished_at is None and "1308" in job.last_event
    refused = fake_zhipu.refusals[429]
    for _ in range(3):
        assert await poll(zhipu_core) == []
    with pytest.raises(FineTunePaused, match="1308"):
        tunes.launch(snapshot)
    assert fake_zhipu.refusals[429] == refused, "no call while the quota is used up"
    assert [told["kind"] for told in notices(zhipu_core)] == ["paused"]

    fake_zhipu.faults.clear()
    await asyncio.sleep(max(0.0, resets_at - time.time()) + 0.1)
    done = await tunes.wait(job)
    assert done.status == FineTuneStatus.SUCCEEDED and done.paused_until is None
    assert len(notices(zhipu_core)) == 1


async def test_a_locked_account_pauses_fine_tunes_for_the_set_time(zhipu_core, fake_zhipu):
    core = core_with(zhipu_core, fake_zhipu, account_pause_s=600)
    fake_zhipu.inject(Fault.error(429, "1112", count=None, path="/files"))
    before = datetime.now(UTC)
    with pytest.raises(FineTunePaused, match="1112"):
        ZhipuFineTunes(core).launch(snapshot_of(core))
    (job,) = stored_jobs(core)
    assert job.paused_until is not None and job.status == FineTuneStatus.UPLOADING
    paused_s = (as_utc(job.paused_until) - before).total_seconds()
    assert 599 < paused_s < 610
    assert [told["kind"] for told in notices(core)] == ["paused"]


async def test_a_full_fine_tune_is_registered_only_once_deployed(zhipu_core, fake_zhipu):
    core = core_with(
        zhipu_core, fake_zhipu, finetune_base_model="glm-4-air-250414", finetune_method="full"
    )
    tunes = ZhipuFineTunes(core)
    job = await tunes.wait(tunes.launch(snapshot_of(core)))
    assert job.status == FineTuneStatus.SUCCEEDED and job.finished_at is not None
    assert job.model_version_id is None
    assert [v.backend for v in registry.list_versions(core.engine)] == ["local"]
    (told,) = notices(core)
    assert told["kind"] == "deploy"
    assert f"waimai models add zhipu <its model code> --job {job.id}" in told["reason"]

    client = zhipuai.ZhipuAI(api_key=fake_zhipu.api_key, base_url=fake_zhipu.base_url)
    with pytest.raises(zhipuai.APIRequestFailedError, match="1211"):
        client.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": "好吃"}]
        )
    code = deploy(fake_zhipu, job.external_id or "")
    version = finetunes.register_deployed(core.engine, job.id or 0, code, "deployed")
    assert (version.model_ref, version.snapshot) == (code, job.snapshot)
    assert version.metrics["curves"]["train"], "the job's loss curves go with its model"
    (answer,) = await core.backends.for_version(version).classify(["好吃"])
    assert isinstance(answer, Verdict), "the deployment answers on the shared pool"
    with pytest.raises(Conflict, match="has model version"):
        finetunes.register_deployed(core.engine, job.id or 0, code, "again")


async def test_fine_tunes_start_from_the_base_model_when_enough_labels_are_new(
    zhipu_core, fake_zhipu
):
    core = core_with(zhipu_core, fake_zhipu, finetune_min_new_labels=5)
    tunes = ZhipuFineTunes(core)
    first = await tunes.wait(tunes.launch(snapshot_of(core)))
    assert first.status == FineTuneStatus.SUCCEEDED

    await label_as_admin(core, 3)
    with pytest.raises(TooFewNewLabels, match=r"3 examples are new since fine-tune job 1 .* 5"):
        tunes.launch(snapshot_of(core))
    held = await run_cycle(core, "zhipu", force=True)
    assert (held.outcome, held.version) == ("skipped", None), "the loop waits, it does not fail"
    assert "3 examples are new" in held.detail
    await label_as_admin(core, 2, start=3)
    second = tunes.launch(snapshot_of(core))
    models = [job.model for job in fake_zhipu.jobs.values()]
    assert models == ["glm-4-flash", "glm-4-flash"], "Zhipu fine-tunes base models only"
    assert second.snapshot != first.snapshot


async def test_past_the_monthly_budget_nothing_is_launched_and_the_admins_hear_it_once(
    zhipu_core, fake_zhipu
):
    cost = estimate(snapshot_of(zhipu_core), zhipu_core.settings.zhipu).cost
    core = core_with(
        zhipu_core, fake_zhipu, monthly_budget=round(cost * 1.5, 2), finetune_min_new_labels=1
    )
    tunes = ZhipuFineTunes(core)
    await tunes.wait(tunes.launch(snapshot_of(core)))
    await label_as_admin(core, 2)
    for _ in range(2):
        with pytest.raises(OverBudget, match=r"spent since .* over the monthly budget"):
            tunes.launch(snapshot_of(core))
    assert len(fake_zhipu.jobs) == 1
    assert [told["kind"] for told in notices(core)] == ["over_budget"]


def test_the_estimate_is_what_zhipus_console_charged_for_the_canonical_split(tmp_path):
    if not DATASET.is_file():
        pytest.skip(f"the dataset is not at {DATASET}")
    frame = pd.read_csv(DATASET)
    train, _ = train_test_split(frame, test_size=0.3, random_state=100)
    rows = [(str(r.review), Label(int(r.label))) for r in train.itertuples()]
    write_jsonl(tmp_path / "train.jsonl", rows)
    snapshot = Snapshot(
        content_hash="c", directory=str(tmp_path), train_sha256="", validation_sha256=""
    )
    cost = estimate(snapshot, ZhipuSettings())
    assert len(rows) == 8390
    assert cost.cost / cost.epochs == pytest.approx(6.0972, rel=0.01)
