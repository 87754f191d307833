"""The world bench/loop.py runs in: stores cloned from a template, the real API over loopback,
and the two ways labels arrive — a platform over HTTP, a merchant through the bot's core path."""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import pandas as pd
from sqlalchemy import update
from sqlmodel import Session, col, select

from api.main import create_app
from bench.store import fresh_core
from core.classify.service import ReviewInput
from core.config import ApiSettings, Settings
from core.models import registry
from core.models.dataset import load_split
from core.store.db import unit_of_work
from core.store.tables import (
    ClientRole,
    LabelEvent,
    LabelKind,
    Review,
    Snapshot,
    Source,
    Split,
    utcnow,
)
from core.wiring import Core
from retrain.cycle import run_cycle
from retrain.trainers.local import read_snapshot
from serving.base import Label, Verdict
from tests.support.loopback import served_in_thread

OTHER_DOMAINS = Path("../shared/data/online_shopping_fruit_clothes.csv")
Row = tuple[str, Label]


@dataclass(frozen=True)
class Domain:
    name: str
    stream: list[Row]
    """Reviews that arrive, in order, with their true labels."""
    measured: list[Row]
    """Other reviews of the domain, never sent: what accuracy is measured on."""
    template: Path
    """A prepared store with the first model, cloned for each scenario."""


@dataclass(frozen=True)
class Seen:
    review_id: int
    prediction_id: int
    predicted: Label
    truth: Label


async def waimai(root: Path, seed: int = 7) -> Domain:
    """The takeaway stream: 80% of the train split withheld and streamed; the first model trains
    on the other 20%; accuracy is the frozen holdout's."""
    core = fresh_core("loop-waimai")
    with unit_of_work(core.engine) as session:
        rows = session.exec(
            select(LabelEvent.id, Review.text, LabelEvent.label)
            .join(Review, col(Review.id) == LabelEvent.review_id)
            .where(LabelEvent.kind == LabelKind.IMPORT, LabelEvent.split == Split.TRAIN)
            .order_by(col(LabelEvent.id))
        ).all()
        chosen = random.Random(seed).sample(rows, int(len(rows) * 0.8))
        session.execute(
            update(LabelEvent)
            .where(col(LabelEvent.id).in_([event_id for event_id, _, _ in chosen]))
            .values(revoked_at=utcnow())
        )
    await run_cycle(core, "local")
    texts, labels = load_split(core.engine, Split.TEST)
    return Domain(
        "waimai",
        [(text, Label(label)) for _, text, label in chosen],
        list(zip(texts, labels, strict=True)),
        _keep(core, root / "waimai"),
    )


async def category(root: Path, cat: str, name: str, measured: int = 400) -> Domain:
    """A shop category that is not takeaway food, on the full takeaway model."""
    frame = pd.read_csv(OTHER_DOMAINS)
    frame = frame[frame.cat == cat].sample(frac=1.0, random_state=1)
    rows = [(str(t), Label(int(y))) for t, y in zip(frame.review, frame.label, strict=True)]
    template = root / "full"
    if not template.is_dir():
        core = fresh_core("loop-full")
        await run_cycle(core, "local")
        _keep(core, template)
    return Domain(name, rows[measured:], rows[:measured], template)


def _keep(core: Core, into: Path) -> Path:
    core.engine.dispose()
    shutil.copytree(Path(str(core.engine.url.database)).parent, into)
    return into


def clone(domain: Domain) -> Core:
    """A private copy of the domain's template store."""
    root = Path(tempfile.mkdtemp(prefix="waimai-loop-"))
    shutil.copytree(domain.template, root, dirs_exist_ok=True)
    settings = Settings(
        _env_file=None,
        db={"url": f"sqlite:///{root / 'bench.db'}"},
        data={"dir": root / "data"},
        local={"dir": root / "models"},
        api=ApiSettings(rate_limit="100000/second"),
    )
    return Core(settings)


class Labeller(Protocol):
    tenant: str

    async def classify(self, rows: Sequence[Row]) -> list[Seen]: ...
    async def label(self, items: Sequence[tuple[Seen, Label]], actors: Sequence[str]) -> None: ...


class Platform:
    """A platform's key: classify and label over HTTP (`POST /v1/classify`, `POST /v1/feedback`);
    ``actors`` name its merchants."""

    def __init__(self, http: httpx.AsyncClient, tenant: str, key: str) -> None:
        self.tenant = tenant
        self._http = http
        self._headers = {"Authorization": f"Bearer {key}"}

    async def classify(self, rows: Sequence[Row]) -> list[Seen]:
        seen = []
        for start in range(0, len(rows), 256):
            batch = rows[start : start + 256]
            reply = await self._http.post(
                "/v1/classify",
                json={"reviews": [{"text": text} for text, _ in batch]},
                headers=self._headers,
            )
            reply.raise_for_status()
            for result, (_, truth) in zip(reply.json()["results"], batch, strict=True):
                predicted = Label.POSITIVE if result["label"] == "positive" else Label.NEGATIVE
                seen.append(Seen(result["review_id"], result["prediction_id"], predicted, truth))
        return seen

    async def label(self, items: Sequence[tuple[Seen, Label]], actors: Sequence[str]) -> None:
        labels = [
            {"review_id": s.review_id, "label": said.api_name, "prediction_id": s.prediction_id}
            | ({"actor": actor} if actor else {})
            for (s, said), actor in zip(items, actors, strict=True)
        ]
        for start in range(0, len(labels), 1000):
            reply = await self._http.post(
                "/v1/feedback", json={"labels": labels[start : start + 1000]}, headers=self._headers
            )
            reply.raise_for_status()


class Merchant:
    """A merchant in the Telegram bot: the core calls its handlers make, one press a label."""

    def __init__(self, core: Core, telegram_id: int) -> None:
        self.tenant = f"telegram:{telegram_id}"
        self._core = core

    async def classify(self, rows: Sequence[Row]) -> list[Seen]:
        results = await self._core.classification.classify(
            [ReviewInput(text) for text, _ in rows], source=Source.TELEGRAM, tenant=self.tenant
        )
        return [
            Seen(r.review_id, r.prediction_id, r.verdict.label, truth)
            for r, (_, truth) in zip(results, rows, strict=True)
        ]

    async def label(self, items: Sequence[tuple[Seen, Label]], actors: Sequence[str]) -> None:
        for seen, said in items:
            await self._core.feedback.record(
                seen.review_id,
                said,
                actor=self.tenant,
                channel=Source.TELEGRAM,
                tenant=self.tenant,
                prediction_id=seen.prediction_id,
            )


@dataclass
class World:
    core: Core
    http: httpx.AsyncClient

    def platform(self, name: str) -> Platform:
        issued = self.core.clients.create(name, ClientRole.CLIENT)
        return Platform(self.http, name, issued.key)

    def merchant(self, telegram_id: int) -> Merchant:
        return Merchant(self.core, telegram_id)

    async def retrain(self) -> str:
        result = await run_cycle(self.core, "local")
        return result.outcome

    def shared_examples(self) -> tuple[list[str], list[Label]]:
        """What the active shared model was trained on."""
        active = registry.active(self.core.engine)
        with Session(self.core.engine) as session:
            snapshot = session.exec(
                select(Snapshot).where(Snapshot.content_hash == active.snapshot)
            ).one()
        return read_snapshot(snapshot)

    def shared_holdout_accuracy(self) -> float:
        return float(registry.active(self.core.engine).metrics["accuracy"])

    async def accuracy(self, tenant: str, rows: Sequence[Row]) -> float:
        """How the model answering ``tenant`` does on ``rows`` (not stored: measured aside)."""
        view = await asyncio.to_thread(self.core.tenant_views.of, tenant)
        if view is not None:
            classifier = self.core.backends.for_view(view)
        else:
            active = await asyncio.to_thread(registry.active, self.core.engine)
            classifier = self.core.backends.for_version(active)
        answers = await classifier.classify([text for text, _ in rows])
        right = [
            isinstance(a, Verdict) and a.label == y for a, (_, y) in zip(answers, rows, strict=True)
        ]
        return sum(right) / len(rows)


@asynccontextmanager
async def world(domain: Domain) -> AsyncIterator[World]:
    """A cloned store, the API serving it over loopback, and a core for the bot's path."""
    core = clone(domain)
    server_core = Core(core.settings)
    try:
        with served_in_thread(create_app(server_core)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=120) as http:
                yield World(core, http)
    finally:
        server_core.engine.dispose()
        core.engine.dispose()
