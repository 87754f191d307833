"""Fine-tune jobs in the store, on SQLite and PostgreSQL: one per snapshot, one model version."""

import pytest

from core.errors import Conflict, NotFound
from core.models import finetunes, registry
from core.store.tables import FineTuneJob, FineTuneStatus, utcnow


def new_job(snapshot: str = "a" * 64) -> FineTuneJob:
    return FineTuneJob(backend="zhipu", snapshot=snapshot, base_model="glm-4-flash")


def test_a_snapshot_gets_one_job_per_backend(engine):
    job = finetunes.create(engine, new_job())
    assert job.id is not None
    assert job.status == FineTuneStatus.UPLOADING
    with pytest.raises(Conflict, match="already has a zhipu fine-tune job"):
        finetunes.create(engine, new_job())
    other = FineTuneJob(backend="vllm", snapshot="a" * 64, base_model="qwen")
    assert finetunes.create(engine, other).id != job.id
    found = finetunes.of_snapshot(engine, "zhipu", "a" * 64)
    assert found is not None
    assert found.id == job.id


def test_jobs_are_found_by_our_id_or_the_providers(engine):
    job = finetunes.create(engine, new_job())
    finetunes.update(engine, job.id, external_id="ftjob-20240821154132388-khlc6")
    assert finetunes.find(engine, str(job.id)).id == job.id
    assert finetunes.find(engine, "ftjob-20240821154132388-khlc6").id == job.id
    with pytest.raises(NotFound):
        finetunes.find(engine, "ftjob-nope")


def test_unfinished_jobs_are_those_without_a_recorded_outcome(engine):
    done = finetunes.create(engine, new_job("b" * 64))
    finetunes.update(engine, done.id, status=FineTuneStatus.FAILED, finished_at=utcnow())
    pending = finetunes.create(engine, new_job("c" * 64))
    assert [j.id for j in finetunes.listing(engine, "zhipu", unfinished_only=True)] == [pending.id]
    assert [j.id for j in finetunes.listing(engine)] == [pending.id, done.id]


def test_the_fine_tuned_model_is_registered_once(engine):
    job = finetunes.create(engine, new_job())
    with pytest.raises(NotFound, match="no fine-tuned model"):
        finetunes.register_model(engine, job.id, "note")
    finetunes.update(engine, job.id, fine_tuned_model="glm-4-flash:1601347751:waimai:7nnzj3pw")
    first = finetunes.register_model(engine, job.id, "from job 1")
    again = finetunes.register_model(engine, job.id, "from job 1")
    assert first.model_version_id == again.model_version_id
    (version,) = registry.list_versions(engine)
    assert (version.backend, version.model_ref, version.snapshot, version.status) == (
        "zhipu",
        "glm-4-flash:1601347751:waimai:7nnzj3pw",
        "a" * 64,
        "candidate",
    )
