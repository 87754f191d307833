"""Label resolution at scale: ``core.labels.resolve.training_set`` on PostgreSQL with 1,000,000
reviews and as many human label events (the targets: under 60 s and under 2 GiB).

A new database on the PostgreSQL server at 127.0.0.1:5432 (dropped afterwards unless
``--keep``) gets the schema and the real dataset (``core.data.prepare``), then, by COPY,
``--reviews`` reviews across about 2,000 tenants (API clients and Telegram merchants) with texts
recombined from fragments of the dataset's reviews: mostly distinct, some repeated across
tenants, a few hundred of the holdout's and the train split's. Each review has one prediction
and one human label (a correction or a confirmation, by the tenant or one of a client's
merchants; about 5% revoked, 1% by admins, 2% of tenants labelling mostly wrong). Resolution
then runs twice, each in a process of its own so that its peak RSS (ru_maxrss) is its own: cold
(the first after the build; the OS cache is not dropped) and warm.

    python -m bench.resolve_scale [--reviews 1000000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import psycopg
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, text

from core.config import DBSettings, RetrainSettings
from core.labels.rules import FateStatus
from core.store.db import make_engine
from core.store.texts import text_hash
from migrations import upgrade_schema

console = Console()
TENANTS, ADMIN_ACTORS = 2_000, tuple(f"ops-admin-{i}" for i in range(5))
POPULAR_TEXTS, POPULAR_SHARE, DATASET_TEXTS = 5_000, 0.04, 300
LIARS, ADMIN_SHARE, REVOKED_SHARE = 0.02, 0.01, 0.05
TARGETS = (("time", "seconds", 60.0, "s"), ("peak RSS", "peak_mib", 2048.0, "MiB"))
TIMEOUT_S = 1800
TABLES = ("review", "prediction", "label_event")
_FRAGMENT = re.compile(r"[，。！？、；,.!?;~…\s]+")


def build(engine: Engine, n: int, seed: int = 7) -> dict[str, float]:
    """The dataset, then ``n`` reviews, predictions and human labels by COPY; seconds by step."""
    from core.models.dataset import prepare  # pandas and scikit-learn: not in the measured process

    steps: dict[str, float] = {}
    start = time.perf_counter()
    prepare(engine, None, Path(tempfile.mkdtemp(prefix="waimai-bench-resolve-")))
    steps["prepare"] = time.perf_counter() - start
    with engine.connect() as connection:
        dataset = connection.execute(
            text(
                "SELECT r.text, e.label, e.split FROM review r "
                "JOIN label_event e ON e.review_id = r.id WHERE e.kind = 'import' ORDER BY r.id"
            )
        ).all()
        last = "SELECT coalesce(max(id), 0) FROM "
        first = {t: connection.execute(text(last + t)).scalar_one() for t in TABLES}

    start = time.perf_counter()
    rng = random.Random(seed)
    fragments = [(f, label) for t, label, _ in dataset for f in _FRAGMENT.split(t) if f]

    def fresh() -> tuple[str, int]:
        picked = rng.sample(fragments, rng.choice((2, 2, 3, 3, 4)))
        return "，".join(f for f, _ in picked), picked[0][1]

    popular = [fresh() for _ in range(POPULAR_TEXTS)]
    repeated = [(t, label) for t, label, part in dataset if part == "test"][:DATASET_TEXTS]
    repeated += [(t, label) for t, label, part in dataset if part == "train"][:DATASET_TEXTS]
    dataset_share = min(0.01, 4 * len(repeated) / n)
    tenants = [f"client-{i}" if i % 2 else f"telegram:{700_000_000 + i}" for i in range(TENANTS)]
    liars = set(rng.sample(tenants, int(LIARS * TENANTS)))
    merchants = {t: rng.randrange(0, 6) if t.startswith("client-") else 0 for t in tenants}
    weights, total = [], 0.0
    for _ in tenants:
        total += rng.paretovariate(1.2)
        weights.append(total)
    owners = rng.choices(tenants, cum_weights=weights, k=n)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    spacing = 180 * 86_400 / n
    reviews: list[tuple[Any, ...]] = []
    predictions: list[tuple[Any, ...]] = []
    labels: list[tuple[Any, ...]] = []
    actors = dict.fromkeys(ADMIN_ACTORS, "admin")
    for i in range(n):
        review_id, prediction_id = first["review"] + 1 + i, first["prediction"] + 1 + i
        tenant = owners[i]
        u = rng.random()
        body, truth = (
            rng.choice(repeated)
            if u < dataset_share
            else rng.choice(popular)
            if u < dataset_share + POPULAR_SHARE
            else fresh()
        )
        key = text_hash(body)
        made = t0 + timedelta(seconds=i * spacing + rng.random() * spacing)
        merchant = rng.randrange(merchants[tenant]) if merchants[tenant] else None
        source = "telegram" if tenant.startswith("telegram:") else "api"
        shop = None if merchant is None else f"shop-{merchant}"
        reviews.append((review_id, body, key, source, tenant, shop, None, made))
        predicted = truth if rng.random() < 0.9 else 1 - truth
        confidence = round(rng.uniform(0.5, 1.0), 4)
        latency = round(rng.uniform(1, 30), 2)
        predicted_at = made + timedelta(milliseconds=200)
        predictions.append(
            (prediction_id, review_id, "local", "tfidf-logreg", predicted, confidence, latency,
             False, predicted_at)
        )  # fmt: skip
        if rng.random() < ADMIN_SHARE:
            actor, given = rng.choice(ADMIN_ACTORS), truth
        else:
            wrong = rng.random() < (0.7 if tenant in liars else 0.03)
            given = 1 - truth if wrong else truth
            by_merchant = merchant is not None and rng.random() < 0.7
            actor = f"{tenant}/merchant-{merchant}" if by_merchant else tenant
            actors.setdefault(actor, "merchant")
        kind = "confirmation" if given == predicted else "correction"
        labelled_at = predicted_at + timedelta(seconds=rng.expovariate(1 / 7200))
        revoked = labelled_at + timedelta(seconds=90) if rng.random() < REVOKED_SHARE else None
        labels.append(
            (review_id, key, given, actor, source, kind, prediction_id, labelled_at, revoked)
        )
    labels.sort(key=lambda row: row[7])
    steps["generate"] = time.perf_counter() - start

    start = time.perf_counter()
    now = datetime.now(UTC)
    raw = engine.raw_connection()
    try:
        with cast(psycopg.Connection[Any], raw.driver_connection).cursor() as cursor:
            copies: list[tuple[str, Any]] = [
                ("actor (name, role, trust, labels, agreements, updated_at)",
                 ((a, role, 0.5, 0, 0, now) for a, role in actors.items())),
                ("review (id, text, text_hash, source, tenant, merchant_id, external_id, "
                 "created_at)", reviews),
                ("prediction (id, review_id, backend, model_id, label, confidence, latency_ms, "
                 "fallback, created_at)", predictions),
                ("label_event (id, review_id, text_hash, label, actor, channel, kind, "
                 "prediction_id, created_at, revoked_at)",
                 ((first["label_event"] + 1 + j, *row) for j, row in enumerate(labels))),
            ]  # fmt: skip
            for target, rows in copies:
                with cursor.copy(f"COPY {target} FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            for table in TABLES:
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
                )
        raw.commit()
    finally:
        raw.close()
    steps["copy"] = time.perf_counter() - start
    start = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
    steps["vacuum analyze"] = time.perf_counter() - start
    return steps


def resolve_only(url: str) -> None:
    """Resolve once in this process and print what it took, as one JSON line."""
    from core.labels.resolve import training_set

    engine = make_engine(DBSettings(url=url))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = training_set(engine, RetrainSettings())
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with engine.connect() as connection:
        human = connection.execute(text("SELECT count(*) FROM label_event WHERE kind <> 'import'"))
        events = int(human.one()[0])
    figures = {
        "events": events,
        "seconds": seconds,
        "peak_mib": peak,
        "before_mib": before,
        "shared": len(result.texts),
        "human": result.human,
        "views": len(result.views),
        **{f"fate_{s}": result.fates.get(s, 0) for s in FateStatus},
        "flagged": len(result.flagged),
        "labellers": len(result.labellers),
        "conflicts": len(result.conflicts),
    }
    print(json.dumps(figures))


def child(*flags: str) -> dict[str, Any]:
    """Run this module with ``flags`` in a new process; the JSON line it printed last."""
    command = [sys.executable, "-m", "bench.resolve_scale", *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{flags[0]} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


ROWS = {
    "human label events": "{events:,}",
    "seconds": "{seconds:.1f}",
    "peak RSS MiB": "{peak_mib:,.0f}",
    "  before the call": "{before_mib:,.0f}",
    "shared examples": "{shared:,}",
    "  from people": "{human:,}",
    "tenant views": "{views:,}",
    **{f"fates: {s}": f"{{fate_{s}:,}}" for s in FateStatus},
    "conflicts": "{conflicts:,}",
    "flagged tenants": "{flagged:,} of {labellers:,}",
}


def report(n: int, runs: dict[str, dict[str, Any]]) -> None:
    table = Table("", title=f"training_set on PostgreSQL, {n:,} tenant reviews")
    for name in runs:
        table.add_column(name, justify="right")
    for label, cell in ROWS.items():
        table.add_row(label, *(cell.format(**f) for f in runs.values()))
    console.print(table)
    for what, key, limit, unit in TARGETS:
        worst = max(f[key] for f in runs.values())
        verdict = "[green]met" if worst < limit else "[red]missed"
        console.print(f"{what}: worst {worst:,.1f} {unit}, target < {limit:,.0f} {unit}: {verdict}")


@contextmanager
def database(keep: bool) -> Iterator[str]:
    """A new database: a scratch one, dropped afterwards, or with ``keep`` one left in place."""
    from tests.support.loopback import PG_ADMIN_URL, scratch_database

    if not keep:
        with scratch_database(prefix="waimai_bench_resolve") as url:
            yield url
        return
    name = f"waimai_bench_resolve_kept_{int(time.time())}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    parser.add_argument("--build-only", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--resolve-only", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.resolve_only:
        resolve_only(args.resolve_only)
        return
    if args.build_only:
        engine = make_engine(DBSettings(url=args.build_only))
        upgrade_schema(engine)
        print(json.dumps(build(engine, args.reviews)))
        return
    # Each step in a process of its own: a child's ru_maxrss starts at its parent's RSS when it
    # is forked (Linux keeps it across exec), so the builder's memory must not be this process's.
    with database(args.keep) as url:
        start = time.perf_counter()
        steps = child("--build-only", url, "--reviews", str(args.reviews))
        shown = ", ".join(f"{k} {v:.1f} s" for k, v in steps.items())
        console.print(
            f"built {args.reviews:,} reviews in {time.perf_counter() - start:.1f} s ({shown})"
        )
        runs = {name: child("--resolve-only", url) for name in ("cold", "warm")}
        report(args.reviews, runs)
        if args.keep:
            console.print(f"[dim]kept (DROP DATABASE it when done): {url}")


if __name__ == "__main__":
    main()
