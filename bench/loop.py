"""Do corrections teach, and can a liar hurt anyone else? The learning loop end to end: the real
API over loopback (platforms) and the bot's core path (merchants), real retrains, on three
domains — the takeaway stream (first model on 20% of the train split, the rest streamed in) and
two shop categories that are not takeaway food (fruit, clothes; ../shared/data).

Scenarios, each on its own copy of the domain's store:
- single client: corrects only wrong verdicts; measured at 90 and at 500 corrections, against
  a model trained on everything it saw with the true labels (the most its stream can teach);
- merchant: confirms or corrects every verdict it is shown, in the bot;
- platform: relays three merchants' corrections under one key, by ``actor``;
- adversaries, each beside an honest bystander that has its own view: a client that "corrects"
  right verdicts to the wrong label, a sleeper (200 honest labels, then flips), a client
  inventing an actor name per label, and ten merchants of whom two flip every label.

    python -m bench.loop [--domains waimai,fruit,clothes] [--plot docs/loop.png]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.loop_report import Outcome, console, plot, show, verdicts
from bench.loop_world import Domain, Labeller, Row, Seen, World, category, waimai, world
from retrain import worker
from retrain.trainers.local import fit
from serving.base import Label

CHECKPOINTS = (90, 500)
BATCH = 100
BYSTANDER_REVIEWS, ADVERSARY_REVIEWS = 1000, 1500


def flip(label: Label) -> Label:
    return Label(1 - label)


async def correct_wrong(
    who: Labeller, stream: Sequence[Row], corrections: int, actors: Sequence[str] = ("",)
) -> int:
    """Send reviews to ``who`` until it has corrected ``corrections`` wrong verdicts; how many
    reviews it took."""
    used, done = 0, 0
    while done < corrections and used < len(stream):
        seen = await who.classify(stream[used : used + BATCH])
        used += len(seen)
        wrong = [s for s in seen if s.predicted != s.truth][: corrections - done]
        await who.label([(s, s.truth) for s in wrong], [actors[0]] * len(wrong))
        done += len(wrong)
    return used


async def single_client(domain: Domain) -> Outcome:
    async with world(domain) as w:
        base = await w.accuracy("shop", domain.measured)
        shop = w.platform("shop")
        curve, used, done = [], 0, 0
        for target in CHECKPOINTS:
            used += await correct_wrong(shop, domain.stream[used:], target - done)
            done = target
            await w.retrain()
            curve.append((target, await w.accuracy("shop", domain.measured)))
        texts, labels = await asyncio.to_thread(w.shared_examples)
    seen = domain.stream[:used]
    model = await asyncio.to_thread(
        fit, texts + [t for t, _ in seen], labels + [y for _, y in seen], 4
    )
    positive = model.positive_probability([t for t, _ in domain.measured])
    reference = sum(
        (p >= 0.5) == (y == Label.POSITIVE)
        for p, (_, y) in zip(positive, domain.measured, strict=True)
    ) / len(domain.measured)
    return Outcome(
        domain.name,
        f"single client ({used:,} seen)",
        done,
        curve[-1][1],
        base,
        reference,
        curve=curve,
    )


async def merchant(domain: Domain, reviews: int) -> Outcome:
    """A merchant in the bot confirms or corrects every verdict it is shown."""
    async with world(domain) as w:
        shop = w.merchant(1001)
        base = await w.accuracy(shop.tenant, domain.measured)
        stream, curve = domain.stream[:reviews], []
        for start in range(0, len(stream), 1000):
            seen = await shop.classify(stream[start : start + 1000])
            await shop.label([(s, s.truth) for s in seen], [""] * len(seen))
            await w.retrain()
            curve.append((start + len(seen), await w.accuracy(shop.tenant, domain.measured)))
    return Outcome(
        domain.name, "merchant, every verdict", len(stream), curve[-1][1], base, curve=curve
    )


async def platform(domain: Domain, reviews: int) -> Outcome:
    """One key relaying three merchants' corrections, named by ``actor``."""
    async with world(domain) as w:
        relay = w.platform("relay")
        base = await w.accuracy("relay", domain.measured)
        seen = await relay.classify(domain.stream[:reviews])
        wrong = [s for s in seen if s.predicted != s.truth]
        await relay.label([(s, s.truth) for s in wrong], [f"m{i % 3}" for i in range(len(wrong))])
        await w.retrain()
        accuracy = await w.accuracy("relay", domain.measured)
    return Outcome(domain.name, "platform, 3 merchants by actor", len(wrong), accuracy, base)


async def adversary(domain: Domain, kind: str) -> Outcome:
    async with world(domain) as w:
        bystander = w.platform("bystander")
        await correct_wrong(bystander, domain.stream[:BYSTANDER_REVIEWS], 10_000)
        await w.retrain()
        before = await _others(w, domain)
        rest = domain.stream[BYSTANDER_REVIEWS : BYSTANDER_REVIEWS + ADVERSARY_REVIEWS]
        tenant, labels = await ATTACKS[kind](w, rest)
        await w.retrain()
        after = await _others(w, domain)
        own = await w.accuracy(tenant, domain.measured)
    return Outcome(
        domain.name,
        kind,
        labels,
        own,
        before[1],
        bystander=(before[0], after[0]),
        shared=(before[1], after[1]),
        holdout=(before[2], after[2]),
    )


async def _others(w: World, domain: Domain) -> tuple[float, float, float]:
    """The bystander's model and the shared model on the domain, and the shared holdout figure."""
    return (
        await w.accuracy("bystander", domain.measured),
        await w.accuracy("nobody-labels", domain.measured),
        await asyncio.to_thread(w.shared_holdout_accuracy),
    )


async def _liar(w: World, rest: Sequence[Row], names: bool = False) -> tuple[str, int]:
    liar = w.platform("liar")
    right = [s for s in await liar.classify(rest) if s.predicted == s.truth]
    actors = [f"name-{i}" for i in range(len(right))] if names else [""] * len(right)
    await liar.label([(s, flip(s.truth)) for s in right], actors)
    return liar.tenant, len(right)


async def _inventor(w: World, rest: Sequence[Row]) -> tuple[str, int]:
    return await _liar(w, rest, names=True)


async def _sleeper(w: World, rest: Sequence[Row]) -> tuple[str, int]:
    sleeper = w.platform("sleeper")
    seen = await sleeper.classify(rest)
    honest, later = seen[:200], seen[200:]
    flips = [s for s in later if s.predicted == s.truth][:500]
    await sleeper.label([(s, s.truth) for s in honest], [""] * len(honest))
    await sleeper.label([(s, flip(s.truth)) for s in flips], [""] * len(flips))
    return sleeper.tenant, len(honest) + len(flips)


async def _flippers(w: World, rest: Sequence[Row]) -> tuple[str, int]:
    """Ten merchants in the bot label what they see with p = 0.7; two of them flip."""
    rng = random.Random(5)
    merchants = [w.merchant(2000 + i) for i in range(10)]
    given = 0
    for i, start in enumerate(range(0, len(rest), 50)):
        shop = merchants[i % 10]
        seen: list[Seen] = await shop.classify(rest[start : start + 50])
        chosen = [s for s in seen if rng.random() < 0.7]
        liar = i % 10 < 2
        await shop.label(
            [(s, flip(s.truth) if liar else s.truth) for s in chosen], [""] * len(chosen)
        )
        given += len(chosen)
    return merchants[0].tenant, given


ATTACKS = {
    "liar: flips right verdicts": _liar,
    "sleeper: 200 honest, then flips": _sleeper,
    "liar inventing actor names": _inventor,
    "10 merchants, 2 flipping": _flippers,
}


DOMAINS = {"waimai": None, "fruit": ("水果", "水果 fruit"), "clothes": ("衣服", "衣服 clothes")}


async def run(names: list[str]) -> tuple[list[Outcome], float]:
    root = Path(tempfile.mkdtemp(prefix="waimai-loop-templates-"))
    outcomes = []
    full_data = 0.0
    for name in names:
        spec = DOMAINS[name]
        domain = await waimai(root) if spec is None else await category(root, *spec)
        console.print(
            f"[bold]{domain.name}[/]: {len(domain.stream):,} reviews to stream, "
            f"{len(domain.measured):,} measured"
        )
        outcomes.append(await single_client(domain))
        outcomes.append(await merchant(domain, len(domain.stream) if spec is None else 3000))
        outcomes.append(await platform(domain, len(domain.stream) if spec is None else 3000))
        for kind in ATTACKS:
            outcomes.append(await adversary(domain, kind))
        if spec is None:
            full_data = await asyncio.to_thread(_full_data)
            served = await threshold_to_served(domain)
            console.print(
                f"threshold reached → the labeller's model answers with it: {served:.1f} s"
            )
    return outcomes, full_data


async def threshold_to_served(domain: Domain, threshold: int = 200) -> float:
    """Seconds from the label that reaches RETRAIN__LABEL_THRESHOLD to the labeller's model
    answering with it, the worker running as `waimai worker` runs it."""
    async with world(domain) as w:
        w.core.settings.retrain.label_threshold = threshold
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run_worker(w.core, stop))
        shop = w.platform("shop")
        seen = await shop.classify(domain.stream[:threshold])
        await shop.label([(s, s.truth) for s in seen], [""] * len(seen))
        arrived = time.monotonic()
        while await asyncio.to_thread(w.core.tenant_views.of, "shop") is None:
            if time.monotonic() - arrived > 300:
                break
            await asyncio.sleep(0.2)
        seconds = time.monotonic() - arrived
        stop.set()
        await running
    return seconds


def _full_data() -> float:
    """The CPU model trained on the whole train split, on the holdout."""
    from core.models.dataset import decode, parse, split, usable_rows

    raw = Path("../shared/data/waimai_10k.csv").read_bytes()
    train, test = split(parse(decode(raw)[0]))
    rows, _ = usable_rows(train)
    held, _ = usable_rows(test)
    model = fit([t for _, t, _ in rows], [y for _, _, y in rows], 4)
    positive = model.positive_probability([t for _, t, _ in held])
    right = sum(
        (p >= 0.5) == (y == Label.POSITIVE) for p, (_, _, y) in zip(positive, held, strict=True)
    )
    return float(right) / len(held)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domains", default="waimai,fruit,clothes")
    parser.add_argument("--plot", type=Path, default=Path("docs/loop.png"))
    args = parser.parse_args()
    outcomes, full_data = asyncio.run(run(args.domains.split(",")))
    show(outcomes)
    for text, met in verdicts(outcomes, full_data):
        console.print(("[green]met[/]  " if met else "[red]MISSED[/] ") + text)
    plot(outcomes, args.plot)
    console.print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
