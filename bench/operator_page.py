"""The operator page (/admin) on a store that looks lived in: its time to render, and its picture.

Builds a SQLite store in a temporary folder: the dataset and a first CPU model, then six
merchants (API clients) who classify reviews of the train split and label half of them, one
against the truth, two of them disagreeing on a few new texts; a retrain (the gate judges its
candidate; the label resolution stores the labellers and the conflicts), a candidate the gate
refuses, and a pending retrain request. The API is served by uvicorn on loopback and GET /admin/
is timed with a logged-in session (p50/p99 of ``--requests``), beside the core's read alone.
With ``--screenshot`` headless chromium logs in and saves the whole page (Chinese text needs a
CJK font, e.g. Debian's fonts-noto-cjk).

    python -m bench.operator_page [--requests 50] [--screenshot docs/operator.png]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from api.main import create_app
from core.classify.service import ReviewInput
from core.errors import Conflict
from core.labels.feedback import LabelInput
from core.models import registry
from core.models.dataset import load_split, prepare
from core.store.tables import ClientRole, Source, Split, saved_id
from core.wiring import Core
from migrations import upgrade_schema
from retrain.cycle import run_cycle
from retrain.trainers.local import fit
from serving.base import Label
from tests.conftest import DATASET, make_settings
from tests.support.loopback import served_in_thread

console = Console()
MERCHANTS = ("meituan-shop-101", "eleme-shop-207", "shop-318", "shop-452", "shop-509")
LIAR = "shop-666"
REVIEWS_EACH = 240
DISPUTED = (
    "包装一般，不过味道还可以",
    "送得挺快，就是有点咸",
    "分量比上次少了，价格没变",
    "口味偏甜，孩子很喜欢",
)


async def build(core: Core) -> str:
    """The store described above; the admin key."""
    upgrade_schema(core.engine)
    await asyncio.to_thread(prepare, core.engine, str(DATASET), core.settings.data.dir)
    await run_cycle(core, "local")
    admin = core.clients.create("ops", ClientRole.ADMIN)
    texts, truths = load_split(core.engine, Split.TRAIN)
    for n, tenant in enumerate((*MERCHANTS, LIAR)):
        chunk = slice(n * REVIEWS_EACH, (n + 1) * REVIEWS_EACH)
        items = [ReviewInput(text) for text in texts[chunk]]
        results = await core.classification.classify(items, source=Source.API, tenant=tenant)
        labels = []
        for i, (result, truth) in enumerate(zip(results, truths[chunk], strict=True)):
            if i % 2:
                continue
            given = Label(1 - truth) if tenant == LIAR else truth
            labels.append(LabelInput(result.review_id, given, tenant, result.prediction_id))
        await core.feedback.record_many(labels, channel=Source.API, tenant=tenant)
    for tenant, label in ((MERCHANTS[0], Label.POSITIVE), (MERCHANTS[1], Label.NEGATIVE)):
        items = [ReviewInput(text) for text in DISPUTED]
        results = await core.classification.classify(items, source=Source.API, tenant=tenant)
        await core.feedback.record_many(
            [LabelInput(r.review_id, label, tenant, r.prediction_id) for r in results],
            channel=Source.API,
            tenant=tenant,
        )
    await run_cycle(core, "local", force=True)
    holdout, truths = load_split(core.engine, Split.TEST)
    worse = fit(holdout[:300], [Label(1 - y) for y in truths[:300]], core.settings.local.ngram_max)
    worse.save(core.settings.local.dir / "flipped", {"examples": 300})
    candidate = registry.register(core.engine, backend="local", model_ref="flipped", metrics={})
    try:
        await core.gate.promote(saved_id(candidate), by="ops (operator page)")
    except Conflict as refused:
        console.print(f"[dim]{refused.message}")
    await core.retrain_requests.request(
        requested_by="ops", reason=f"{LIAR}'s corrections keep rising", backend="local"
    )
    return admin.key


def log_in(http: httpx.Client, key: str) -> str:
    """The session cookie a login gives (sent by hand: it is Secure, and this is plain HTTP)."""
    form = http.get("/admin/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    sent = http.post(
        "/admin/login",
        data={"key": key, "csrf": token[1]},
        headers={"Cookie": f"waimai_admin={form.cookies['waimai_admin']}"},
    )
    assert sent.status_code == 303, sent.text
    return str(sent.cookies["waimai_admin"])


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def time_page(base_url: str, key: str, requests: int) -> list[float]:
    with httpx.Client(base_url=base_url, headers={"Accept": "text/html"}) as http:
        cookie = {"Cookie": f"waimai_admin={log_in(http, key)}"}
        timings = []
        for _ in range(requests + 3):
            started = time.perf_counter()
            page = http.get("/admin/", headers=cookie)
            timings.append((time.perf_counter() - started) * 1000)
            assert page.status_code == 200, page.text
            assert "Model versions" in page.text
    return timings[3:]


async def time_read(core: Core, requests: int) -> list[float]:
    timings = []
    for _ in range(requests + 3):
        started = time.perf_counter()
        await core.loop_overview.overview()
        timings.append((time.perf_counter() - started) * 1000)
    return timings[3:]


def screenshot(base_url: str, key: str, out: Path) -> None:
    from tests.api.admin.browser import chromium
    from tests.api.admin.browser import log_in as log_in_with_the_form

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
        log_in_with_the_form(page, base_url, key)
        page.locator("details.report[open] img").evaluate(
            "img => img.complete || new Promise(done => img.addEventListener('load', done))"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
    console.print(f"saved {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--screenshot", type=Path, help="save a picture of the page here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="waimai-operator-") as folder:
        core = Core(make_settings(Path(folder)))
        core.settings.api.rate_limit = "100000/second"
        started = time.perf_counter()
        key = asyncio.run(build(core))
        console.print(f"store built in {time.perf_counter() - started:.0f} s")
        read = asyncio.run(time_read(core, args.requests))
        with served_in_thread(create_app(core)) as base_url:
            page = time_page(base_url, key, args.requests)
            if args.screenshot:
                screenshot(base_url, key, args.screenshot)
        core.close()
    table = Table("what", "p50 ms", "p99 ms", "max ms", title=f"{args.requests} requests each")
    for name, samples in (("core read (LoopOverview)", read), ("GET /admin/ over loopback", page)):
        table.add_row(
            name,
            f"{statistics.median(samples):.1f}",
            f"{percentile(samples, 0.99):.1f}",
            f"{max(samples):.1f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
