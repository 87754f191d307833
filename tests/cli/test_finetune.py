"""``waimai models add zhipu`` and ``waimai finetune`` as a user runs them, on the fake Zhipu."""

import re
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from cli.main import app
from core.config import get_settings
from core.models import finetunes, registry
from core.models.dataset import load_split
from core.store.tables import Split
from core.wiring import Core
from tests.fakes.zhipu_errors import quota_message
from tests.fakes.zhipu_fixtures import (  # noqa: F401  (pytest fixtures)
    fake_zhipu_fixture,
    small_store_fixture,
    zhipu_core_fixture,
)
from tests.fakes.zhipu_jobs import deploy
from tests.fakes.zhipu_server import FakeZhipu, Fault, keyword_rule

runner = CliRunner()


@pytest.fixture
def env(zhipu_core: Core, fake_zhipu: FakeZhipu, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment a user would set: the store, and Zhipu's key and address."""
    settings = zhipu_core.settings
    monkeypatch.chdir(settings.data.dir.parent)
    for name, value in {
        "DB__URL": settings.db.url,
        "DATA__DIR": str(settings.data.dir),
        "LOCAL__DIR": str(settings.local.dir),
        "ZHIPU__API_KEY": fake_zhipu.api_key,
        "ZHIPU__BASE_URL": fake_zhipu.base_url,
        "ZHIPU__MAX_RPS": "1000",
        "ZHIPU__POLL_INTERVAL_S": "0.05",
        "ZHIPU__RETRIES": "1",
        "ZHIPU__BACKOFF_INITIAL_S": "0.01",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def waimai(*args: str):
    return runner.invoke(app, list(args))


def said(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_a_zhipu_model_is_added_through_the_gate_and_answers(env, zhipu_core, fake_zhipu):
    texts, labels = load_split(zhipu_core.engine, Split.TEST)
    truth = {text: label.zh for text, label in zip(texts, labels, strict=True)}
    fake_zhipu.answer = lambda review: truth.get(review) or keyword_rule(review)

    added = waimai("models", "add", "zhipu", "glm-4-flash")
    assert added.exit_code == 0, added.output
    assert re.search(r"model version \d+ \(zhipu:glm-4-flash\) is candidate", said(added))
    assert re.search(r"promoted: accuracy 1\.0000 vs 0\.\d+", said(added)), added.output
    assert re.search(r"\(zhipu:glm-4-flash\) is active; holdout accuracy 1\.0000", said(added))

    answered = waimai("classify", "送餐太慢，菜都凉了")
    assert said(answered).startswith("差评 (negative) ←"), answered.output

    fake_zhipu.inject(Fault.error(503, "1305", count=None))
    fell_back = waimai("classify", "送餐太慢，菜都凉了")
    assert fell_back.exit_code == 0
    assert "(备用模型)" in said(fell_back) and "置信度" in said(fell_back)


def test_a_model_added_without_the_gate_is_a_candidate_only(env, fake_zhipu):
    added = waimai("models", "add", "zhipu", "glm-4-flash", "--no-gate")
    assert added.exit_code == 0, added.output
    assert said(added).endswith("(zhipu:glm-4-flash) is candidate; not evaluated")
    assert not fake_zhipu.answered and not fake_zhipu.batch.batches


def test_only_known_remote_backends_can_be_added(env):
    refused = waimai("models", "add", "local", "x")
    assert refused.exit_code == 1
    assert "invalid_input" in said(refused)


def test_finetune_launch_status_wait_and_no_second_job(env, zhipu_core, fake_zhipu):
    launched = waimai("finetune", "zhipu", "--no-wait")
    assert launched.exit_code == 0, launched.output
    cost = r"[\d,]+ tokens × 3 epochs × 0\.013 yuan per 1k tokens ≈ \d+\.\d\d yuan"
    assert re.search(cost, said(launched))
    assert "fine-tune job 1 (ftjob-" in said(launched) and "is created" in said(launched)

    listed = waimai("finetune", "status")
    assert listed.exit_code == 0, listed.output
    assert "ftjob-" in said(listed)

    followed = waimai("finetune", "status", "--wait")
    assert followed.exit_code == 0, followed.output
    assert "job 1: succeeded" in said(followed)
    assert "succeeded" in said(waimai("finetune", "status"))

    (tuned,) = [v for v in registry.list_versions(zhipu_core.engine) if v.backend == "zhipu"]
    assert tuned.model_ref.startswith("glm-4-flash:1601347751:waimai:")
    assert (tuned.status, tuned.metrics["n"]) == ("rejected", sum(fake_zhipu.answered.values()))

    again = waimai("finetune", "zhipu")
    assert again.exit_code == 1
    assert "never trained twice" in said(again)
    assert len(fake_zhipu.jobs) == 1


def test_finetune_follows_a_job_to_its_end(env, fake_zhipu):
    fake_zhipu.train_s = 3.0  # long enough for a poll to see it running
    followed = waimai("finetune", "zhipu")
    assert followed.exit_code == 0, followed.output
    assert "job 1: running" in said(followed)
    done = r"is succeeded → glm-4-flash:\d+:waimai:\w{8}, model version \d"
    assert re.search(done, said(followed))


def test_finetune_cancel_by_zhipus_job_id(env, fake_zhipu):
    fake_zhipu.train_s = 60
    waimai("finetune", "zhipu", "--no-wait")
    (external_id,) = fake_zhipu.jobs
    cancelled = waimai("finetune", "cancel", external_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert "is cancelled: cancelled by hand" in said(cancelled)
    assert "already" in said(waimai("finetune", "cancel", "1"))
    assert waimai("finetune", "cancel", "99").exit_code == 1


def test_finetune_above_the_budget_is_refused(env, fake_zhipu, monkeypatch):
    monkeypatch.setenv("ZHIPU__FINETUNE_BUDGET", "0.001")
    get_settings.cache_clear()
    refused = waimai("finetune", "zhipu")
    assert refused.exit_code == 1
    assert "over_budget" in said(refused) and "over the budget" in said(refused)
    assert not fake_zhipu.files


def test_finetune_without_a_key_says_so(env, monkeypatch):
    monkeypatch.delenv("ZHIPU__API_KEY")
    get_settings.cache_clear()
    refused = waimai("finetune", "zhipu")
    assert refused.exit_code == 1
    assert "ZHIPU__API_KEY is not set" in said(refused)


def test_a_refused_fine_tune_is_launched_again_with_retry(env, zhipu_core, fake_zhipu):
    fake_zhipu.inject(Fault.error(429, "1113", count=None, path="/fine_tuning/jobs"))
    refused = waimai("finetune", "zhipu", "--no-wait")
    assert refused.exit_code == 1
    assert "finetune_refused" in said(refused) and "1113" in said(refused)
    assert "nothing retries it" in said(refused)

    again = waimai("finetune", "zhipu", "--no-wait")
    assert again.exit_code == 1 and "`waimai finetune zhipu --retry`" in said(again)
    listed = said(waimai("finetune", "status"))
    assert "failed" in listed and "1113" in listed

    fake_zhipu.faults.clear()
    retried = waimai("finetune", "zhipu", "--retry")
    assert retried.exit_code == 0, retried.output
    assert "fine-tune job 2 (ftjob-" in said(retried) and "is succeeded" in said(retried)
    jobs = finetunes.listing(zhipu_core.engine)
    assert [(job.attempt, job.status) for job in jobs] == [(2, "succeeded"), (1, "failed")]


def test_a_paused_fine_tune_says_until_when(env, zhipu_core, fake_zhipu):
    launched = waimai("finetune", "zhipu", "--no-wait")
    assert launched.exit_code == 0, launched.output
    (external_id,) = fake_zhipu.jobs
    resets_at = time.time() + 3600
    message = quota_message("1308", resets_at)
    fake_zhipu.inject(Fault.error(429, "1308", count=None, path=external_id, message=message))
    listed = waimai("finetune", "status")
    assert listed.exit_code == 0, listed.output
    assert "paused" in said(listed) and "UTC" in said(listed)
    assert finetunes.find(zhipu_core.engine, "1").paused_until is not None
    refused = waimai("finetune", "zhipu")
    assert refused.exit_code == 1
    assert "finetune_paused" in said(refused) and "1308" in said(refused)


def test_a_full_fine_tune_is_added_by_the_code_of_its_deployment(
    env, zhipu_core, fake_zhipu, monkeypatch
):
    monkeypatch.setenv("ZHIPU__FINETUNE_BASE_MODEL", "glm-4-air-250414")
    monkeypatch.setenv("ZHIPU__FINETUNE_METHOD", "full")
    get_settings.cache_clear()
    followed = waimai("finetune", "zhipu")
    assert followed.exit_code == 0, followed.output
    assert "waimai models add zhipu <its model code> --job 1" in said(followed)
    assert [v.backend for v in registry.list_versions(zhipu_core.engine)] == ["local"]

    (external_id,) = fake_zhipu.jobs
    code = deploy(fake_zhipu, external_id)
    added = waimai("models", "add", "zhipu", code, "--job", "1")
    assert added.exit_code == 0, added.output
    assert f"(zhipu:{code}) is candidate" in said(added)
    assert "not promoted: accuracy" in said(added), "the gate judged it"
    (version,) = [v for v in registry.list_versions(zhipu_core.engine) if v.backend == "zhipu"]
    assert version.metrics["curves"]["validation"] and "gate" in version.metrics
    assert finetunes.find(zhipu_core.engine, "1").model_version_id == version.id
