"""Remote backends under load: throughput of a batch of 1,000 reviews, one function per backend.

Zhipu: the fake Zhipu runs in its own process, answering after 200 ms and refusing more than 32
requests at once (429, code 1302), as the account limit would. The backend (the zhipuai SDK in
threads) is compared with an asyncio client sending the same requests, and run again with a
burst of 429s injected: it must slow down, not lose or repeat a review.

    python -m bench.backends
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import median

import httpx
import pandas as pd
from rich.console import Console
from rich.table import Table

from serving.base import Label, Verdict
from serving.prompt import chat_messages
from serving.zhipu import ZhipuClassifier, label_of
from tests.conftest import DATASET
from tests.fakes.zhipu_server import DEMO_API_KEY, keyword_rule

BATCH = 1000
LATENCY_S = 0.2
CONCURRENCY = 32
BURST_429 = 300
RUNS = 3


@dataclass(frozen=True)
class Figure:
    backend: str
    case: str
    reviews_per_s: float
    target: float | None = None
    note: str = ""


def reviews(count: int = BATCH) -> list[str]:
    """``count`` distinct reviews from the dataset (distinct, so a repeat would show)."""
    texts = pd.read_csv(DATASET)["review"].astype(str).str.strip().drop_duplicates()
    return texts.sample(n=count, random_state=7).tolist()


@contextmanager
def fake_zhipu(*args: str) -> Iterator[str]:
    """The fake Zhipu in a child process on a free port; yields its base URL."""
    command = [sys.executable, "-m", "tests.fakes.zhipu_server", "--port", "0", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().split()[3]
    finally:
        process.terminate()
        process.wait(10)


def control(base_url: str) -> str:
    return base_url.split("/api/")[0] + "/_fake"


def sdk_in_threads(
    base_url: str, texts: list[str], concurrency: int
) -> tuple[float, list[Label | None]]:
    classifier = ZhipuClassifier(
        DEMO_API_KEY,
        "glm-4-flash",
        base_url=base_url,
        max_concurrency=concurrency,
        max_rps=10_000,
        retries=8,
        backoff_initial_s=0.05,
        backoff_max_s=1.0,
    )
    try:
        started = time.perf_counter()
        verdicts = asyncio.run(classifier.classify(texts))
        labels = [v.label if isinstance(v, Verdict) else None for v in verdicts]  # None: declined
        return len(texts) / (time.perf_counter() - started), labels
    finally:
        classifier.close()


async def asyncio_client(base_url: str, texts: list[str], concurrency: int) -> float:
    """The same requests from one event loop with httpx.AsyncClient, for comparison."""
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {DEMO_API_KEY}"}
    async with httpx.AsyncClient(base_url=base_url, limits=limits, headers=headers) as client:

        async def one(text: str) -> Label:
            body = {"model": "glm-4-flash", "messages": chat_messages(text), "do_sample": False}
            async with slots:
                response = await client.post("/chat/completions", json=body | {"max_tokens": 8})
            response.raise_for_status()
            return label_of(response.json())

        started = time.perf_counter()
        await asyncio.gather(*(one(text) for text in texts))
        return len(texts) / (time.perf_counter() - started)


def zhipu() -> list[Figure]:
    texts = reviews()
    expected = [Label.from_zh(keyword_rule(text)) for text in texts]
    bound = CONCURRENCY / LATENCY_S
    figures = []
    limit = ("--latency", str(LATENCY_S), "--max-concurrency", str(CONCURRENCY))
    with fake_zhipu(*limit) as base_url:
        rates = []
        for _ in range(RUNS):
            rate, labels = sdk_in_threads(base_url, texts, CONCURRENCY)
            assert labels == expected, "a review got another review's answer"
            rates.append(rate)
        refused = httpx.get(f"{control(base_url)}/stats").json()["refusals"].get("429", 0)
        note = f"median of {RUNS}; bound {bound:.0f}/s; 429s from the limit: {refused}"
        figures.append(Figure("zhipu", "zhipuai SDK, 32 threads", median(rates), 0.8 * bound, note))

        rates = [asyncio.run(asyncio_client(base_url, texts, CONCURRENCY)) for _ in range(RUNS)]
        note = f"median of {RUNS}; for comparison"
        figures.append(Figure("zhipu", "httpx asyncio, 32 at once", median(rates), None, note))

        before = httpx.get(f"{control(base_url)}/stats").json()["answered"]
        burst = {"kind": "error", "status": 429, "code": "1302", "count": BURST_429}
        httpx.post(f"{control(base_url)}/faults", json=burst).raise_for_status()
        rate, labels = sdk_in_threads(base_url, texts, CONCURRENCY)
        answered = httpx.get(f"{control(base_url)}/stats").json()["answered"] - before
        wrong = sum(1 for got, want in zip(labels, expected, strict=True) if got != want)
        note = f"{answered} answers for {len(texts)} reviews; {wrong} lost or mixed up"
        assert answered == len(texts), note
        assert wrong == 0, note
        figures.append(Figure("zhipu", f"SDK, a burst of {BURST_429} 429s", rate, None, note))
    with fake_zhipu("--latency", str(LATENCY_S)) as base_url:
        rate, _ = sdk_in_threads(base_url, texts, 128)
        figures.append(Figure("zhipu", "zhipuai SDK, 128 threads", rate, None, "no server limit"))
        rate = asyncio.run(asyncio_client(base_url, texts, 128))
        figures.append(Figure("zhipu", "httpx asyncio, 128 at once", rate, None, "no server limit"))
    return figures


def main() -> None:
    figures = zhipu()  # vLLM and other remote backends: one more function each, added here
    load = os.getloadavg()[0]
    title = f"a batch of {BATCH:,} reviews; fake answering in 200 ms; machine load {load:.1f}"
    table = Table(title=title)
    for column in ("backend", "case", "reviews/s", "target", "note"):
        table.add_column(column, justify="right" if column in ("reviews/s", "target") else "left")
    for figure in figures:
        target = f"≥ {figure.target:.0f}" if figure.target is not None else "–"
        table.add_row(
            figure.backend, figure.case, f"{figure.reviews_per_s:.0f}", target, figure.note
        )
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
