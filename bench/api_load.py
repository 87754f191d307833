"""The HTTP API under load: the real server (``waimai api``, uvicorn) driven over loopback.

Prepares a store in a temporary folder with the ``waimai`` commands (db upgrade, data prepare,
train local), starts ``waimai api`` with the bench echo endpoint on, then, with many concurrent
keep-alive clients (aiohttp: httpx's async pool managed ~200 requests/s with 32 connections
against a bare ASGI echo on this machine, so it measured itself, not the server), measures:

- ``POST /bench/echo`` with a one-review body: the same process doing no work, the baseline;
- ``POST /v1/classify`` with one review a request (the target: ≥ 0.5 × echo, p99 < 50 ms);
- ``POST /v1/classify`` with 256 reviews a request (the target: ≥ 10,000 reviews/s);
- that every acknowledged review is stored exactly once (counted in the store afterwards).

Echo and single-review classify take turns, in ``--turns`` slices each, so that the machine's
drifts in speed (large here, from minute to minute) fall on both alike.

    python -m bench.api_load [--seconds 8] [--turns 8] [--concurrency 32] [--db-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import func
from sqlmodel import Session, col, select

from core.config import DBSettings, LocalModelSettings, Settings
from core.store.tables import ClientRole, Prediction, Review, Source
from core.wiring import Core
from tests.support.loopback import free_port

REPO = Path(__file__).resolve().parent.parent
WAIMAI = Path(sys.executable).parent / "waimai"
TEXTS = [
    "送餐太慢了，菜都凉了",
    "味道不错，分量足，还会再点",
    "一般般吧",
    "很快，好吃，味道足，量大",
]
console = Console()


@dataclass
class Run:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    measured_reviews: int = 0
    review_ids: list[int] = field(default_factory=list)
    """Every review acknowledged, warm-up included (for the exactly-once check)."""

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def environment(root: Path, port: int, db_url: str | None) -> dict[str, str]:
    return os.environ | {
        "ENV": "development",
        "LOG_LEVEL": "WARNING",
        "DB__URL": db_url or f"sqlite:///{root / 'bench.db'}",
        "DATA__DIR": str(root / "data"),
        "LOCAL__DIR": str(root / "models"),
        "API__PORT": str(port),
        "API__BENCH_ECHO": "true",
        "API__RATE_LIMIT": "1000000/second",
    }


def prepare_store(env: dict[str, str]) -> None:
    for command in (["db", "upgrade"], ["data", "prepare"], ["train", "local", "--if-none-active"]):
        console.print(f"[dim]waimai {' '.join(command)}")
        subprocess.run([str(WAIMAI), *command], env=env, check=True, capture_output=True)


async def wait_until_up(base_url: str, server: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        for _ in range(300):
            if server.poll() is not None:
                raise RuntimeError("the server exited before it was ready")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not become ready in 30 s")


async def drive(
    base_url: str,
    workloads: list[Workload],
    *,
    concurrency: int,
    seconds: float,
    turns: int = 1,
) -> list[Run]:
    """``concurrency`` workers post in a loop to each workload: first a one-second warm-up each,
    then ``turns`` slices of ``seconds / turns`` each, the workloads taking turns, so that the
    machine's drifts in speed fall on all of them alike."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as client:
        loads = [
            Load(
                client,
                w.path,
                w.bodies,
                w.headers | {"content-type": "application/json"},
                Run(w.name),
            )
            for w in workloads
        ]
        for load in loads:
            await load.for_(1.0, concurrency, measured=False)
        for _ in range(turns):
            for load in loads:
                load.run.seconds += await load.for_(seconds / turns, concurrency, measured=True)
    return [load.run for load in loads]


@dataclass(frozen=True)
class Workload:
    name: str
    path: str
    bodies: list[bytes]
    headers: dict[str, str]


@dataclass
class Load:
    client: aiohttp.ClientSession
    path: str
    bodies: list[bytes]
    headers: dict[str, str]
    run: Run
    sent: int = 0

    async def for_(self, seconds: float, concurrency: int, *, measured: bool) -> float:
        """Keep ``concurrency`` requests in flight for ``seconds``; the time it took."""
        deadline = asyncio.get_running_loop().time() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(self._worker(deadline, measured) for _ in range(concurrency)))
        return time.perf_counter() - started

    async def _worker(self, deadline: float, measured: bool) -> None:
        run, loop = self.run, asyncio.get_running_loop()
        while loop.time() < deadline:
            body = self.bodies[self.sent % len(self.bodies)]
            self.sent += 1
            started = time.perf_counter()
            async with self.client.post(self.path, data=body, headers=self.headers) as response:
                answer = await response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                run.failures += measured
                continue
            if self.path == "/v1/classify":
                ids = [r["review_id"] for r in json.loads(answer)["results"]]
                run.review_ids += ids
                run.measured_reviews += len(ids) if measured else 0
            if measured:
                run.latencies.append(elapsed)


def one_review_bodies(count: int) -> list[bytes]:
    return [
        json.dumps(
            {"reviews": [{"text": TEXTS[i % len(TEXTS)] + f" #{i}"}]}, ensure_ascii=False
        ).encode()
        for i in range(count)
    ]


def batch_bodies(count: int, size: int) -> list[bytes]:
    return [
        json.dumps(
            {"reviews": [{"text": f"{TEXTS[j % len(TEXTS)]} {i}-{j}"} for j in range(size)]},
            ensure_ascii=False,
        ).encode()
        for i in range(count)
    ]


@dataclass(frozen=True)
class Stored:
    review_ids: list[int]
    predictions: int


def stored_for(settings: Settings, tenant: str) -> Stored:
    """The reviews and the number of predictions stored for ``tenant``."""
    core = Core(settings)
    with Session(core.engine) as session:
        review_ids = session.exec(
            select(Review.id).where(Review.tenant == tenant, Review.source == Source.API)
        ).all()
        predictions = session.exec(
            select(func.count())
            .select_from(Prediction)
            .join(Review, col(Review.id) == col(Prediction.review_id))
            .where(Review.tenant == tenant)
        ).one()
    core.engine.dispose()
    return Stored([i for i in review_ids if i is not None], predictions)


async def measure(args: argparse.Namespace, root: Path) -> list[Run]:
    port = free_port()
    env = environment(root, port, args.db_url)
    prepare_store(env)
    settings = Settings(
        _env_file=None,
        db=DBSettings(url=env["DB__URL"]),
        local=LocalModelSettings(dir=Path(env["LOCAL__DIR"])),
    )
    core = Core(settings)
    key = core.clients.create("bench", ClientRole.CLIENT).key
    core.engine.dispose()
    headers = {"Authorization": f"Bearer {key}"}
    base_url = f"http://127.0.0.1:{port}"
    command = [str(WAIMAI), "api", "--port", str(port), "--no-access-log"]
    server = subprocess.Popen(command, env=env, cwd=root)
    try:
        await wait_until_up(base_url, server)
        singles = one_review_bodies(50_000)
        echo, classify = await drive(
            base_url,
            [
                Workload("echo", "/bench/echo", singles, {}),
                Workload("classify, 1 review", "/v1/classify", singles, headers),
            ],
            concurrency=args.concurrency,
            seconds=args.seconds,
            turns=args.turns,
        )
        (batch,) = await drive(
            base_url,
            [
                Workload(
                    f"classify, {args.batch_size} reviews",
                    "/v1/classify",
                    batch_bodies(64, args.batch_size),
                    headers,
                )
            ],
            concurrency=args.batch_concurrency,
            seconds=args.seconds,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    runs = [echo, classify, batch]
    report(args, runs, stored_for(settings, "bench"))
    return runs


def report(args: argparse.Namespace, runs: list[Run], stored: Stored) -> None:
    echo, classify, batch = runs
    table = Table(title=f"HTTP API over loopback, {args.concurrency} concurrent clients")
    for column in ("endpoint", "requests/s", "p50 ms", "p99 ms", "reviews/s", "failed"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for run in runs:
        reviews = "" if run is echo else f"{run.measured_reviews / run.seconds:,.0f}"
        table.add_row(
            run.name,
            f"{run.per_second:,.0f}",
            f"{run.percentile(0.5):.1f}",
            f"{run.percentile(0.99):.1f}",
            reviews,
            str(run.failures),
        )
    console.print(table)
    acknowledged = classify.review_ids + batch.review_ids
    ratio = classify.per_second / echo.per_second if echo.per_second else 0.0
    checks = Table(show_header=False, title="targets")
    checks.add_row("classify ÷ echo (≥ 0.5)", f"{ratio:.2f}")
    checks.add_row("classify p99 (< 50 ms)", f"{classify.percentile(0.99):.1f} ms")
    checks.add_row("batch reviews/s (≥ 10,000)", f"{batch.measured_reviews / batch.seconds:,.0f}")
    exactly_once = (
        len(set(acknowledged)) == len(acknowledged)
        and sorted(acknowledged) == sorted(stored.review_ids)
        and stored.predictions == len(stored.review_ids)
    )
    checks.add_row(
        "acknowledged / stored reviews / predictions",
        f"{len(acknowledged):,} / {len(stored.review_ids):,} / {stored.predictions:,}",
    )
    checks.add_row("each acknowledged review stored exactly once", "yes" if exactly_once else "NO")
    console.print(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--turns", type=int, default=8, help="Slices in which echo and classify take turns"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument(
        "--db-url", help="An empty database to use instead of a new SQLite file (e.g. PostgreSQL)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="waimai-api-load-") as folder:
        asyncio.run(measure(args, Path(folder)))


if __name__ == "__main__":
    main()
