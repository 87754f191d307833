"""The scheduler's jobs on a real store, and leadership between real processes."""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from core.classify.service import ReviewInput
from core.models import registry
from core.store.tables import ActorRole, RetrainRequest, Source
from core.wiring import Core
from retrain import worker
from serving.base import Label

REPO = Path(__file__).resolve().parents[2]
WAIMAI = str(Path(sys.executable).parent / "waimai")


@pytest.fixture
def leading(core: Core):
    worker._running = core
    yield core
    worker._running = None


def label_many(core: Core, n: int) -> None:
    items = [ReviewInput(f"第{i}条新评论，味道不错") for i in range(n)]
    results = asyncio.run(core.classification.classify(items, source=Source.API, tenant="shop"))
    for result in results:
        asyncio.run(
            core.feedback.record(
                result.review_id,
                Label.POSITIVE,
                actor="boss",
                channel=Source.API,
                role=ActorRole.ADMIN,
            )
        )


def requests(core: Core) -> list[RetrainRequest]:
    with Session(core.engine) as session:
        return list(session.exec(select(RetrainRequest)).all())


def test_a_pending_request_is_run_and_marked_handled(leading: Core):
    ticket = asyncio.run(leading.retrain_requests.request(requested_by="bot:1", backend="local"))
    asyncio.run(worker.check_job())
    (request,) = requests(leading)
    assert request.id == ticket.request.id
    assert request.handled_at is not None
    assert request.outcome.startswith("skipped"), "nothing changed since the active model"


def test_enough_new_labels_start_a_retrain_that_promotes(leading: Core):
    leading.settings.retrain.label_threshold = 5
    before = registry.active(leading.engine)
    label_many(leading, 3)
    asyncio.run(worker.check_job())
    assert requests(leading) == []
    label_many(leading, 3)
    asyncio.run(worker.check_job())
    (request,) = requests(leading)
    assert request.requested_by == "threshold"
    assert request.outcome.startswith(("promoted", "rejected"))
    assert registry.active(leading.engine).id != before.id or "rejected" in request.outcome
    asyncio.run(worker.check_job())
    assert len(requests(leading)) == 1, "the labels were consumed by that run"


@pytest.mark.slow
def test_a_running_worker_serves_a_merchants_labels_within_a_minute_of_the_threshold(core: Core):
    core.settings.retrain.label_threshold = 20
    core.settings.retrain.check_every_s = 1

    async def label_then_wait() -> float:
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run_worker(core, stop))
        items = [ReviewInput(f"第{i}单：水果不新鲜，烂了好几个") for i in range(20)]
        results = await core.classification.classify(items, source=Source.API, tenant="grocer")
        for result in results:
            await core.feedback.record(
                result.review_id,
                Label.NEGATIVE,
                actor="grocer",
                channel=Source.API,
                tenant="grocer",
            )
        arrived = time.monotonic()
        while core.tenant_views.of("grocer") is None and time.monotonic() - arrived < 60:
            await asyncio.sleep(0.2)
        stop.set()
        await running
        return time.monotonic() - arrived

    seconds = asyncio.run(label_then_wait())
    assert core.tenant_views.of("grocer") is not None, f"no view served after {seconds:.0f} s"
    assert seconds < 60


def test_the_jobs_are_stored_in_the_product_database(core: Core):
    async def start_and_stop() -> list[str]:
        scheduler = worker.build_scheduler(core)
        scheduler.start(paused=True)
        ids = sorted(job.id for job in scheduler.get_jobs())
        scheduler.shutdown(wait=False)
        return ids

    jobs = ["check", "drift", "poll-finetunes", "retrain", "stats-rollup"]
    assert asyncio.run(start_and_stop()) == jobs
    with Session(core.engine) as session:
        stored = session.connection().execute(text("SELECT id FROM apscheduler_jobs ORDER BY id"))
    assert [row[0] for row in stored] == jobs


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [WAIMAI, "worker"],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_for(predicate, timeout: float = 40.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_exactly_one_of_two_workers_leads_and_the_other_takes_over(db_url: str, tmp_path: Path):
    env = os.environ | {
        "DB__URL": db_url,
        "RETRAIN__LEADER_RETRY_S": "0.5",
        "LOG_LEVEL": "INFO",
        "DATA__DIR": str(tmp_path / "data"),
        "LOCAL__DIR": str(tmp_path / "models"),
    }
    subprocess.run([WAIMAI, "db", "upgrade"], cwd=REPO, env=env, check=True)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [start_worker(env, log) for log in logs]
    try:

        def leaders() -> list[int]:
            return [i for i, log in enumerate(logs) if "leads the learning loop" in log.read_text()]

        assert wait_for(lambda: len(leaders()) == 1)
        time.sleep(2)
        (leader,) = leaders()
        follower = 1 - leader
        assert "another worker leads" in logs[follower].read_text()

        workers[leader].kill()
        workers[leader].wait()
        assert wait_for(lambda: "leads the learning loop" in logs[follower].read_text())
    finally:
        for process in workers:
            process.terminate()
            process.wait(timeout=20)
