"""What people read at scale: ``GET /v1/stats``, the bot's /stats and /queue, the operator page
and the worker's drift check, on a PostgreSQL store (127.0.0.1:5432, a scratch database dropped
afterwards) holding ``--reviews`` reviews (1,000,000) with a prediction each and a human label on
one in ten, over 200 merchants, spread over the last 60 days. The target: each under 200 ms.

The store is filled by COPY (``bench.review_reads.fill``) after the schema, then ANALYZEd, and
the worker's stats rollup runs once (its time is printed: it runs in the background). Each
read is timed after a warm-up, through the same path its user takes: the HTTP API (in uvicorn on
loopback) for /v1/stats and the operator page, the core services the bot's handlers call for
/stats and /queue, and the drift service the worker's job calls.

    python -m bench.scale_reads [--reviews 1000000] [--times 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench.review_reads import fill, timed
from bench.store import empty_core
from core.access.merchants import Member
from core.store.tables import ActorRole, ClientRole, utcnow

console = Console()
TENANTS, LABELLED_SHARE, DAYS, TARGET_MS = 200, 0.1, 60, 200.0
MERCHANT, CLIENT = 1006, "client-7"
"""The Telegram user whose /stats and /queue are timed, and the API client whose /v1/stats is:
half the merchants use the bot (telegram:1000, telegram:1002, ...), half the API (client-1, ...)."""


def rows(n_reviews: int, seed: int = 5) -> tuple[list[tuple[Any, ...]], ...]:
    """Reviews (one prediction each) over the last ``DAYS`` days, and the labels of a tenth."""
    rng = random.Random(seed)
    reviews: list[tuple[Any, ...]] = []
    predictions: list[tuple[Any, ...]] = []
    labels: list[tuple[Any, ...]] = []
    start = utcnow() - timedelta(days=DAYS)
    step = timedelta(days=DAYS) / n_reviews
    for review_id in range(1, n_reviews + 1):
        k = rng.randrange(TENANTS)
        source = "telegram" if k % 2 == 0 else "api"
        tenant = f"telegram:{1000 + k}" if source == "telegram" else f"client-{k}"
        made = start + step * review_id
        key = f"{review_id:064x}"
        reviews.append((review_id, f"第{review_id}单，味道不错", key, source, tenant, None,
                        None, made))  # fmt: skip
        label = rng.randrange(2)
        fallback = rng.random() < 0.02
        predictions.append((review_id, review_id, "local", "local:bench", label,
                            round(rng.uniform(0.5, 1), 4), 3.0, fallback, made))  # fmt: skip
        if rng.random() < LABELLED_SHARE:
            kind = rng.choice(("confirmation", "correction", "confirmation"))
            labels.append((len(labels) + 1, review_id, key,
                           label if kind == "confirmation" else 1 - label, tenant, source,
                           kind, review_id, made + timedelta(minutes=5)))  # fmt: skip
    return reviews, predictions, labels


def measure(url: str, root: Path, n_reviews: int, times: int) -> dict[str, tuple[float, float]]:
    from api.main import create_app
    from tests.support.loopback import served_in_thread

    core = empty_core(url, root)
    with console.status(f"filling the store with {n_reviews:,} reviews"):
        fill(core.engine, rows(n_reviews))
    started = time.perf_counter()
    asyncio.run(core.stats.refresh())
    rollup_s = time.perf_counter() - started
    admin = core.clients.create("bench-admin", ClientRole.ADMIN).key
    client = core.clients.create(CLIENT, ClientRole.CLIENT).key
    member = Member(MERCHANT, ActorRole.MERCHANT, "zh")
    loop = asyncio.new_event_loop()

    def run(work: Callable[[], Any]) -> Callable[[], object]:
        return lambda: loop.run_until_complete(work())

    figures: dict[str, tuple[float, float]] = {}
    with served_in_thread(create_app(core)) as base, httpx.Client(base_url=base) as http:

        def get(path: str, key: str) -> Callable[[], object]:
            def call() -> object:
                response = http.get(path, headers={"Authorization": f"Bearer {key}"})
                response.raise_for_status()
                return response

            return call

        figures["GET /v1/stats (admin: every merchant)"] = timed(get("/v1/stats", admin), times)
        figures["GET /v1/stats (a merchant)"] = timed(get("/v1/stats", client), times)
        figures["GET /admin/ (the operator page)"] = timed(get("/admin/", admin), times)
        figures["bot /stats (merchants.overview)"] = timed(
            run(lambda: core.merchants.overview(member)), times
        )
        figures["bot /queue (reviews.least_confident)"] = timed(
            run(
                lambda: core.reviews.least_confident(
                    tenant=member.tenant, since=utcnow() - timedelta(days=7)
                )
            ),
            times,
        )
        figures["worker drift check"] = timed(run(core.drift.check), max(3, times // 4))
    loop.close()
    core.close()
    console.print(f"the worker's stats rollup (every STATS__ROLLUP_EVERY_S): {rollup_s:.1f} s")
    return figures


def report(n: int, figures: dict[str, tuple[float, float]]) -> None:
    table = Table("read", "p50 ms", "p99 ms", "under 200 ms", title=f"reads over {n:,} reviews")
    for read, (p50, p99) in figures.items():
        table.add_row(read, f"{p50:.1f}", f"{p99:.1f}", "yes" if p99 < TARGET_MS else "NO")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=1_000_000)
    parser.add_argument("--times", type=int, default=20)
    args = parser.parse_args()
    from tests.support.loopback import scratch_database

    with (
        tempfile.TemporaryDirectory() as root,
        scratch_database(prefix="waimai_bench_scale") as url,
    ):
        report(args.reviews, measure(url, Path(root), args.reviews, args.times))


if __name__ == "__main__":
    main()
