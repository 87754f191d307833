"""Single-review reads at scale: ``core.reviews.get`` and ``GET /v1/reviews/{id}`` on SQLite and
PostgreSQL stores holding 1,000,000 predictions (the target: p99 under 5 ms a read).

Each store gets the schema, then ``--predictions`` predictions over half as many reviews (one to
three each, across 200 tenants) and a human label on one review in ten, by bulk insert: one
``executemany`` transaction on SQLite, COPY through psycopg 3 on a scratch PostgreSQL database
(127.0.0.1:5432, dropped afterwards), then ANALYZE. Reads ask for reviews drawn uniformly over
the whole table, old and new alike, after a warm-up; a page (``core.reviews.page``, 50 newest of
a tenant) and a tenant's stats (``core.reviews.stats``) are timed too, so that a faster single
read is not bought with slower lists.

    python -m bench.review_reads [--predictions 1000000] [--reads 2000] [--stores sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import psycopg
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, text

from bench.store import empty_core
from core.classify import reviews
from core.classify.stats import stats
from core.store.tables import ClientRole

console = Console()
TENANTS, LABELLED_SHARE, TARGET_MS = 200, 0.1, 5.0
_REVIEW = "review (id, text, text_hash, source, tenant, merchant_id, external_id, created_at)"
_PREDICTION = (
    "prediction (id, review_id, backend, model_id, label, confidence, latency_ms, fallback, "
    "created_at)"
)
_LABEL = (
    "label_event (id, review_id, text_hash, label, actor, channel, kind, prediction_id, created_at)"
)


def rows(n_predictions: int, seed: int = 11) -> tuple[list[tuple[Any, ...]], ...]:
    """Reviews, predictions (one to three a review, ``n_predictions`` in all) and labels."""
    rng = random.Random(seed)
    reviews_: list[tuple[Any, ...]] = []
    predictions: list[tuple[Any, ...]] = []
    labels: list[tuple[Any, ...]] = []
    t0, review_id = datetime(2026, 1, 1, tzinfo=UTC), 0
    while len(predictions) < n_predictions:
        review_id += 1
        tenant = f"client-{rng.randrange(TENANTS)}"
        made = t0 + timedelta(seconds=review_id * 10)
        key = f"{review_id:064x}"
        body = f"第{review_id}单，味道不错"
        reviews_.append((review_id, body, key, "api", tenant, None, None, made))
        for again in range(min(rng.choice((1, 2, 3)), n_predictions - len(predictions))):
            label = rng.randrange(2)
            predictions.append(
                (len(predictions) + 1, review_id, "local", "tfidf", label,
                 round(rng.uniform(0.5, 1), 4), 3.0, False, made + timedelta(hours=again))
            )  # fmt: skip
        if rng.random() < LABELLED_SHARE:
            kind = rng.choice(("confirmation", "correction"))
            labels.append(
                (len(labels) + 1, review_id, key, label if kind == "confirmation" else 1 - label,
                 tenant, "api", kind, len(predictions), made + timedelta(days=1))
            )  # fmt: skip
    return reviews_, predictions, labels


def fill(engine: Engine, tables: tuple[list[tuple[Any, ...]], ...]) -> None:
    """Bulk-insert ``tables`` (reviews, predictions, labels), then ANALYZE."""
    targets = (_REVIEW, _PREDICTION, _LABEL)
    raw = engine.raw_connection()
    try:
        if engine.dialect.name == "postgresql":
            with cast(psycopg.Connection[Any], raw.driver_connection).cursor() as cursor:
                for target, table in zip(targets, tables, strict=True):
                    with cursor.copy(f"COPY {target} FROM STDIN") as copy:
                        for row in table:
                            copy.write_row(row)
                for name in ("review", "prediction", "label_event"):
                    cursor.execute(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), max(id)) "
                        f"FROM {name}"
                    )
        else:
            inserts = raw.cursor()
            for target, table in zip(targets, tables, strict=True):
                marks = ", ".join("?" * len(table[0]))
                inserts.executemany(
                    f"INSERT INTO {target} VALUES ({marks})",
                    [[_sqlite(v) for v in row] for row in table],
                )
            inserts.close()
        raw.commit()
    finally:
        raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE"))


def _sqlite(value: Any) -> Any:
    """A value as SQLAlchemy stores it on SQLite (datetimes as naive UTC text)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    return value


def timed(read: Callable[[], object], times: int) -> tuple[float, float]:
    """p50 and p99 in milliseconds of ``times`` calls (after a tenth as many unmeasured)."""
    for _ in range(max(1, times // 10)):
        read()
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        read()
        spent.append((time.perf_counter() - start) * 1000)
    cuts = statistics.quantiles(spent, n=100, method="inclusive")
    return cuts[49], cuts[98]


def measure(
    url: str, root: Path, tables: tuple[list[tuple[Any, ...]], ...], reads: int
) -> dict[str, Any]:
    """Fill a store at ``url`` and time its reads (files under ``root``); figures by read."""
    from api.main import create_app
    from tests.support.loopback import served_in_thread

    core = empty_core(url, root)
    start = time.perf_counter()
    fill(core.engine, tables)
    built = time.perf_counter() - start
    rng = random.Random(3)
    owners = {row[0]: row[4] for row in tables[0]}
    ids = list(owners)
    key = core.clients.create("bench-admin", ClientRole.ADMIN).key

    def one() -> object:
        review_id = rng.choice(ids)
        return reviews.get(core.engine, review_id, tenant=owners[review_id])

    figures: dict[str, Any] = {"built_s": built, "core.classify.reviews.get": timed(one, reads)}
    with served_in_thread(create_app(core)) as base, httpx.Client(base_url=base) as http:
        headers = {"Authorization": f"Bearer {key}"}

        def over_http() -> object:
            response = http.get(f"/v1/reviews/{rng.choice(ids)}", headers=headers)
            response.raise_for_status()
            return response

        figures["GET /v1/reviews/{id}"] = timed(over_http, reads)
    tenant = "client-7"
    figures["core.classify.reviews.page (50)"] = timed(
        lambda: reviews.page(core.engine, tenant=tenant), max(20, reads // 20)
    )
    figures["core.classify.stats.stats (a tenant)"] = timed(
        lambda: stats(core.engine, tenant=tenant), 10
    )
    core.engine.dispose()
    return figures


@contextmanager
def store(name: str, root: Path) -> Iterator[str]:
    """A new store: a SQLite file under ``root``, or a scratch PostgreSQL database."""
    if name == "sqlite":
        yield f"sqlite:///{root / 'reads.db'}"
        return
    from tests.support.loopback import scratch_database

    with scratch_database(prefix="waimai_bench_reads") as url:
        yield url


def report(n: int, results: dict[str, dict[str, Any]]) -> None:
    table = Table("store", "read", "p50 ms", "p99 ms", title=f"review reads, {n:,} predictions")
    for name, figures in results.items():
        for read, value in figures.items():
            if read == "built_s":
                continue
            p50, p99 = value
            single = read in ("core.classify.reviews.get", "GET /v1/reviews/{id}")
            mark = ("[green]" if p99 < TARGET_MS else "[red]") if single else ""
            table.add_row(name, read, f"{p50:.2f}", f"{mark}{p99:.2f}")
    console.print(table)
    built = ", ".join(f"{name} {f['built_s']:.0f} s" for name, f in results.items())
    console.print(f"built in {built}; target for a single review: p99 < {TARGET_MS:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--stores", default="sqlite,postgresql")
    args = parser.parse_args()
    tables = rows(args.predictions)
    console.print(
        f"{len(tables[0]):,} reviews, {len(tables[1]):,} predictions, {len(tables[2]):,} labels"
    )
    results = {}
    for name in args.stores.split(","):
        with (
            tempfile.TemporaryDirectory(prefix="waimai-bench-reads-") as folder,
            store(name, Path(folder)) as url,
        ):
            results[name] = measure(url, Path(folder), tables, args.reads)
        console.print(f"[dim]{name} done")
    report(args.predictions, results)


if __name__ == "__main__":
    main()
