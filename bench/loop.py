"""The learning loop, simulated through the real core: does accuracy climb, and does it hold
against merchants who lie?

Setup: the canonical store, with 80% of the train split's dataset labels withheld (marked
revoked) so that those reviews can arrive as new ones. The first model trains on the other 20%.
Then the withheld reviews stream in through the classification service, each shown to one of
ten simulated merchants; a merchant labels a review with probability ``p`` — honest ones with
the truth (a confirmation or a correction), adversaries with the opposite. Every ``K`` labels a
retrain cycle runs (snapshot → train → gate). Holdout accuracy is recorded after each cycle.

    python -m bench.loop [--p 0.7] [--every 1000] [--plot docs/loop.png]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import update
from sqlmodel import col, select

from bench.store import fresh_core
from core import registry
from core.classification import ReviewInput
from core.db import unit_of_work
from core.tables import LabelEvent, LabelKind, Review, Source, Split, utcnow
from core.wiring import Core
from retrain.cycle import run_cycle
from serving.base import Label

MERCHANTS = 10
BATCH = 50
console = Console()


@dataclass(frozen=True)
class Cycle:
    labels: int
    accuracy: float
    outcome: str
    replaced: float | None = None
    seconds: float | None = None


@dataclass
class Run:
    name: str
    cycles: list[Cycle] = field(default_factory=list)


def withhold(core: Core, share: float, seed: int) -> list[tuple[str, Label]]:
    """Revoke the dataset labels of ``share`` of the train split; return those reviews."""
    with unit_of_work(core.engine) as session:
        rows = session.exec(
            select(LabelEvent.id, Review.text, LabelEvent.label)
            .join(Review, col(Review.id) == LabelEvent.review_id)
            .where(LabelEvent.kind == LabelKind.IMPORT, LabelEvent.split == Split.TRAIN)
            .order_by(col(LabelEvent.id))
        ).all()
        chosen = random.Random(seed).sample(rows, int(len(rows) * share))
        session.execute(
            update(LabelEvent)
            .where(col(LabelEvent.id).in_([event_id for event_id, _, _ in chosen]))
            .values(revoked_at=utcnow())
        )
    return [(text, Label(label)) for _, text, label in chosen]


def holdout_accuracy(core: Core) -> float:
    return float(registry.active(core.engine).metrics["accuracy"])


async def simulate(name: str, p: float, every: int, adversaries: int, seed: int = 7) -> Run:
    core = fresh_core(f"loop-{name.split()[0]}")
    stream = withhold(core, 0.8, seed)
    first = await run_cycle(core, "local")
    run = Run(name)
    run.cycles.append(Cycle(0, holdout_accuracy(core), first.outcome))

    rng = random.Random(seed)
    liars = {f"merchant-{i}" for i in range(adversaries)}
    labels_given, since_cycle = 0, 0
    for start in range(0, len(stream), BATCH):
        merchant = f"merchant-{rng.randrange(MERCHANTS)}"
        batch = stream[start : start + BATCH]
        results = await core.classification.classify(
            [ReviewInput(text) for text, _ in batch], source=Source.API, tenant=merchant
        )
        for result, (_, truth) in zip(results, batch, strict=True):
            if rng.random() >= p:
                continue
            said = Label(1 - truth) if merchant in liars else truth
            core.feedback.record(result.review_id, said, actor=merchant, channel=Source.API)
            labels_given += 1
            since_cycle += 1
        if since_cycle >= every or start + BATCH >= len(stream):
            before = holdout_accuracy(core)
            cycle = await run_cycle(core, "local")
            run.cycles.append(
                Cycle(labels_given, holdout_accuracy(core), cycle.outcome, before, cycle.seconds)
            )
            since_cycle = 0
    return run


async def label_to_promotion(p: float) -> float:
    """Seconds from one admin label arriving to a promoted model trained on it (12k rows)."""
    core = fresh_core("loop-latency")
    await run_cycle(core, "local")
    (result,) = await core.classification.classify(
        [ReviewInput("送来的时候汤洒了一半，但味道还可以")], source=Source.API, tenant="shop"
    )
    started = time.perf_counter()
    core.feedback.record(result.review_id, Label.NEGATIVE, actor="boss", channel=Source.API)
    await run_cycle(core, "local", force=True)
    return time.perf_counter() - started


def show(run: Run) -> None:
    table = Table(title=f"the loop: {run.name}")
    for column in ("cycle", "labels", "holdout accuracy", "replaced", "outcome", "seconds"):
        table.add_column(column, justify="right")
    for i, c in enumerate(run.cycles):
        table.add_row(
            str(i),
            f"{c.labels:,}",
            f"{c.accuracy:.4f}",
            "–" if c.replaced is None else f"{c.replaced:.4f}",
            c.outcome,
            "–" if c.seconds is None else f"{c.seconds:.1f}",
        )
    console.print(table)


def plot(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=110)
    for run in runs:
        axes.plot(
            [c.labels for c in run.cycles],
            [c.accuracy for c in run.cycles],
            "o-",
            label=run.name,
        )
    axes.axhline(0.9094, color="grey", linestyle="--", linewidth=1, label="full train split")
    axes.set_xlabel("merchant labels received")
    axes.set_ylabel("holdout accuracy")
    axes.set_title("Holdout accuracy after each retrain cycle")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--p", type=float, default=0.7, help="chance a merchant labels a review")
    parser.add_argument("--every", type=int, default=1000, help="labels between retrains")
    parser.add_argument("--plot", type=Path, default=Path("bench/out/loop.png"))
    args = parser.parse_args()

    honest = asyncio.run(simulate("honest merchants", args.p, args.every, adversaries=0))
    hostile = asyncio.run(simulate("20% adversaries", args.p, args.every, adversaries=2))
    for run in (honest, hostile):
        show(run)
    drops = [
        c.replaced - c.accuracy
        for c in hostile.cycles
        if c.replaced is not None and c.outcome == "promoted"
    ]
    console.print(f"largest drop at a promotion with adversaries: {max(drops, default=0.0):.4f}")
    console.print(f"label → promoted CPU model: {asyncio.run(label_to_promotion(args.p)):.1f} s")
    plot([honest, hostile], args.plot)
    console.print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
