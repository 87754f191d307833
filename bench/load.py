"""Sustained load on two API processes sharing one PostgreSQL store: the mix platforms send.

A new database on the PostgreSQL server at 127.0.0.1:5432 (dropped afterwards, unless
``--db-url`` names one) is prepared with the ``waimai`` commands as bench/api_load.py does; two
``waimai api`` processes on two ports are driven, for ``--seconds`` after a warm-up, by
``--concurrency`` keep-alive aiohttp clients split between them: mostly one-review classify
requests, some batches, and labels (``POST /v1/reviews/{id}/feedback``) from several actors on
reviews that came back, each review labelled once. Then the store is counted: every acknowledged
review stored once with one prediction, every acknowledged label event stored once, and nothing
else from the bench's tenant beyond what failed.

    python -m bench.load [--seconds 60] [--concurrency 32] [--db-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import tempfile
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from rich.table import Table
from sqlalchemy import create_engine, text

from bench.api_load import (
    TEXTS,
    WAIMAI,
    console,
    environment,
    prepare_store,
    wait_until_up,
)
from core.config import DBSettings, Settings
from core.store.tables import ClientRole
from core.wiring import Core
from tests.support.loopback import free_port, scratch_database

KINDS = ("classify", "batch", "label")
WARM_UP_S = 2.0


@dataclass
class Kind:
    """What one kind of request did in the measured window (its outcomes: all of them)."""

    latencies: list[float] = field(default_factory=list)
    reviews: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    """Every answer's status, warm-up included; 0 is no answer (timeout, connection error)."""


@dataclass
class Load:
    """The clients' shared record: what was measured and every write acknowledged."""

    sessions: list[aiohttp.ClientSession]
    batch_size: int
    actors: int
    kinds: dict[str, Kind] = field(default_factory=lambda: {k: Kind() for k in KINDS})
    reviews: list[int] = field(default_factory=list)
    labels: dict[int, int] = field(default_factory=dict)
    """Acknowledged label event id → its review."""
    to_label: deque[int] = field(default_factory=deque)
    failed_reviews: int = 0
    """Reviews sent in classify requests that were not acknowledged."""
    sent: int = 0

    async def client(self, n: int, measure_from: float, until: float) -> None:
        session, dice = self.sessions[n % len(self.sessions)], random.Random(n)
        while (now := time.perf_counter()) < until:
            roll = dice.random()
            if roll < 0.15 and self.to_label:
                kind = "label"
            elif roll < 0.20:
                kind = "batch"
            else:
                kind = "classify"
            await self._send(session, kind, n, dice, measured=now >= measure_from)

    async def _send(
        self, session: aiohttp.ClientSession, kind: str, n: int, dice: random.Random, measured: bool
    ) -> None:
        self.sent += 1
        if kind == "label":
            review_id = self.to_label.popleft()
            path = f"/v1/reviews/{review_id}/feedback"
            label = dice.choice(["positive", "negative"])
            payload: object = {"label": label, "actor": f"actor-{n % self.actors}"}
            size = 0
        else:
            size = self.batch_size if kind == "batch" else 1
            path = "/v1/classify"
            payload = {
                "reviews": [
                    {"text": f"{TEXTS[(self.sent + j) % len(TEXTS)]} #{self.sent}-{j}"}
                    for j in range(size)
                ]
            }
        started = time.perf_counter()
        try:
            async with session.post(path, data=json.dumps(payload, ensure_ascii=False)) as answer:
                status, body = answer.status, await answer.read()
        except (aiohttp.ClientError, TimeoutError):
            status, body = 0, b""
        elapsed = time.perf_counter() - started
        record = self.kinds[kind]
        record.statuses[status] += 1
        if status not in (200, 201):
            self.failed_reviews += size
            return
        if kind == "label":
            event = json.loads(body)
            self.labels[event["id"]] = event["review_id"]
        else:
            ids = [result["review_id"] for result in json.loads(body)["results"]]
            self.reviews += ids
            self.to_label.extend(ids)
        if measured:
            record.latencies.append(elapsed)
            record.reviews += size


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


@dataclass(frozen=True)
class Stored:
    predictions: Counter[int]
    """Predictions per stored review of the bench's tenant."""
    labels: dict[int, int]
    """Label events of the bench's tenant: id → review."""


def stored(db_url: str, tenant_name: str) -> Stored:
    engine = create_engine(db_url)
    tenant = {"tenant": tenant_name}
    with engine.connect() as connection:
        reviews = connection.execute(
            text(
                "SELECT r.id, count(p.id) FROM review r LEFT JOIN prediction p"
                " ON p.review_id = r.id WHERE r.tenant = :tenant GROUP BY r.id"
            ),
            tenant,
        ).all()
        labels = connection.execute(
            text(
                "SELECT e.id, e.review_id FROM label_event e JOIN review r ON r.id = e.review_id"
                " WHERE r.tenant = :tenant"
            ),
            tenant,
        ).all()
    engine.dispose()
    return Stored(Counter({row[0]: row[1] for row in reviews}), {row[0]: row[1] for row in labels})


async def drive(args: argparse.Namespace, urls: list[str], key: str) -> Load:
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    per_server = max(1, args.concurrency // len(urls))
    sessions = [
        aiohttp.ClientSession(
            url,
            headers=headers,
            connector=aiohttp.TCPConnector(limit=per_server),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        for url in urls
    ]
    load = Load(sessions, args.batch_size, args.actors)
    start = time.perf_counter()
    measure_from, until = start + WARM_UP_S, start + WARM_UP_S + args.seconds
    try:
        await asyncio.gather(
            *(load.client(n, measure_from, until) for n in range(args.concurrency))
        )
    finally:
        for session in sessions:
            await session.close()
    return load


def measure(args: argparse.Namespace, db_url: str, root: Path) -> None:
    ports = [free_port(), free_port()]
    env = environment(root, ports[0], db_url)
    prepare_store(env)
    tenant = f"load-{uuid.uuid4().hex[:8]}"
    core = Core(Settings(_env_file=None, db=DBSettings(url=db_url)))
    key = core.clients.create(tenant, ClientRole.CLIENT).key
    core.engine.dispose()
    servers = [
        subprocess.Popen(
            [str(WAIMAI), "api", "--port", str(port), "--no-access-log"], env=env, cwd=root
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url, server in zip(urls, servers, strict=True):
            asyncio.run(wait_until_up(url, server))
        load_before = os.getloadavg()
        console.print(f"[dim]driving {', '.join(urls)} for {args.seconds:g} s")
        load = asyncio.run(drive(args, urls, key))
        load_after = os.getloadavg()
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
    report(args, load, stored(db_url, tenant), (load_before, load_after))


def report(
    args: argparse.Namespace,
    load: Load,
    store: Stored,
    machine: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> None:
    title = (
        f"2 API processes on PostgreSQL, {args.concurrency} clients, {args.seconds:g} s"
        f" (load average {machine[0][0]:.1f} before, {machine[1][0]:.1f} after;"
        f" {os.cpu_count()} cores)"
    )
    table = Table(title=title)
    for column in ("kind", "requests/s", "reviews/s", "p50 ms", "p99 ms", "answers", "errors"):
        table.add_column(column, justify="left" if column in ("kind", "errors") else "right")
    shown = {"classify": "classify ×1", "batch": f"classify ×{args.batch_size}", "label": "label"}
    for name, kind in load.kinds.items():
        errors = {status: n for status, n in kind.statuses.items() if status not in (200, 201)}
        table.add_row(
            shown[name],
            f"{len(kind.latencies) / args.seconds:,.1f}",
            f"{kind.reviews / args.seconds:,.0f}" if name != "label" else "",
            f"{percentile(kind.latencies, 0.5):.1f}",
            f"{percentile(kind.latencies, 0.99):.1f}",
            f"{kind.statuses.total():,}",
            ", ".join(f"{n} × {s or 'no answer'}" for s, n in sorted(errors.items())) or "none",
        )
    console.print(table)

    acknowledged, labels = Counter(load.reviews), load.labels
    labels_per_review = Counter(store.labels.values())
    failed_labels = load.kinds["label"].statuses.total() - len(load.labels)
    unacknowledged = set(store.predictions) - set(acknowledged)
    extra_labels = set(store.labels) - set(labels)
    checks = {
        "no review id acknowledged twice": max(acknowledged.values(), default=1) == 1,
        "acknowledged reviews stored, one prediction each": all(
            store.predictions[i] == 1 for i in acknowledged
        ),
        "reviews stored unacknowledged ≤ failed": len(unacknowledged) <= load.failed_reviews,
        "acknowledged labels stored, once each": all(
            store.labels.get(i) == review and labels_per_review[review] == 1
            for i, review in labels.items()
        ),
        "labels stored unacknowledged ≤ failed": len(extra_labels) <= failed_labels,
    }
    counts = Table(show_header=False, title="exactly once")
    counts.add_row(
        "reviews acknowledged / stored / predictions",
        f"{len(acknowledged):,} / {len(store.predictions):,} / {store.predictions.total():,}",
    )
    counts.add_row("labels acknowledged / stored", f"{len(labels):,} / {len(store.labels):,}")
    counts.add_row(
        "unacknowledged stored / failed: reviews; labels",
        f"{len(unacknowledged)} / {load.failed_reviews}; {len(extra_labels)} / {failed_labels}",
    )
    for check, holds in checks.items():
        counts.add_row(check, "yes" if holds else "[red]NO")
    console.print(counts)
    if not all(checks.values()):
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--actors", type=int, default=5)
    parser.add_argument("--db-url", help="A PostgreSQL database to use instead of a new one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="waimai-load-") as folder:
        if args.db_url:
            measure(args, args.db_url, Path(folder))
        else:
            with scratch_database("waimai_bench") as db_url:
                measure(args, db_url, Path(folder))


if __name__ == "__main__":
    main()
