"""A model report with every panel drawn: a Zhipu fine-tune, run against the fake Zhipu.

Builds a SQLite store in a temporary folder (the dataset and a first CPU model), then fine-tunes
"glm-4-flash" on a snapshot through the real zhipuai SDK against the fake Zhipu the tests use
(tests/fakes/zhipu_server.py: its jobs report a falling loss, its model answers by a keyword
rule). The job's loss events become the version's curves, and the gate measures the version on
the holdout through the Batch API, as it would on Zhipu. The report of that version is written
with ``core.reports.png``, as ``waimai models report`` writes it; the fake gives no
confidences, so the calibration panel says so.

    python -m bench.report_picture [--out docs/report.png]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from rich.console import Console

from core.models.dataset import prepare
from core.wiring import Core
from migrations import upgrade_schema
from retrain.cycle import run_cycle
from retrain.snapshot import snapshot_for
from retrain.trainers.zhipu import ZhipuFineTunes
from tests.conftest import DATASET, make_settings
from tests.fakes.zhipu_fixtures import zhipu_settings
from tests.fakes.zhipu_server import FakeZhipu, serving

console = Console()


async def fine_tuned(core: Core) -> int:
    """The id of the version a fine-tune made, judged by the gate."""
    upgrade_schema(core.engine)
    await asyncio.to_thread(prepare, core.engine, str(DATASET), core.settings.data.dir)
    await run_cycle(core, "local")
    tunes = ZhipuFineTunes(core)
    job = await asyncio.to_thread(tunes.launch, snapshot_for(core))
    job = await tunes.wait(job, lambda j: console.print(f"job {j.id}: {j.status}"))
    assert job.model_version_id is not None, job.error
    return job.model_version_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/report.png"))
    args = parser.parse_args()
    fake = FakeZhipu(queue_s=0.5, train_s=4.0)
    with tempfile.TemporaryDirectory() as root, serving(fake):
        settings = make_settings(Path(root))
        settings.zhipu = zhipu_settings(fake, poll_interval_s=0.5)
        core = Core(settings)
        version_id = asyncio.run(fine_tuned(core))
        started = time.perf_counter()
        png = asyncio.run(core.reports.png(version_id))
        drawn_ms = (time.perf_counter() - started) * 1000
        core.close()
    args.out.write_bytes(png)
    console.print(f"version {version_id}: report written to {args.out} in {drawn_ms:.0f} ms")


if __name__ == "__main__":
    main()
