"""What bench/loop.py prints and draws: one table, each target met or missed, docs/loop.png."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(width=160)
Span = tuple[float, float]


@dataclass
class Outcome:
    domain: str
    scenario: str
    labels: int
    labeller: float
    """Accuracy on the domain of the model answering the labeller, at the end."""
    base: float
    reference: float | None = None
    bystander: Span | None = None
    shared: Span | None = None
    """The shared model on the domain, before and after the adversary."""
    holdout: Span | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)


def show(outcomes: list[Outcome]) -> None:
    table = Table(title="the learning loop: what corrections teach, and what lies cannot do")
    for column in (
        "domain",
        "scenario",
        "labels",
        "base",
        "labeller's model",
        "most it could",
        "bystander",
        "shared on domain",
        "holdout",
    ):
        table.add_column(column, justify="right")
    for o in outcomes:
        curve = " / ".join(f"{a:.3f}" for _, a in o.curve[:-1])
        table.add_row(
            o.domain,
            o.scenario,
            f"{o.labels:,}",
            f"{o.base:.3f}",
            (f"{curve} / " if curve else "") + f"{o.labeller:.3f}",
            "–" if o.reference is None else f"{o.reference:.3f}",
            _span(o.bystander),
            _span(o.shared),
            "–" if o.holdout is None else f"{o.holdout[0]:.4f} → {o.holdout[1]:.4f}",
        )
    console.print(table)


def _span(span: Span | None) -> str:
    return "–" if span is None else f"{span[0]:.3f} → {span[1]:.3f}"


def verdicts(outcomes: list[Outcome], full_data: float) -> list[tuple[str, bool]]:
    """Each target of the learning loop, and whether this run met it."""
    checks = []
    for o in outcomes:
        if o.reference is not None:
            (_, at_90), (_, at_500) = o.curve
            share = (o.labeller - o.base) / max(o.reference - o.base, 1e-9)
            checks.append(
                (f"{o.domain}: single client keeps {share:.0%} of the gain (≥ 75%)", share >= 0.75)
            )
            checks.append(
                (f"{o.domain}: 500 corrections ({at_500:.3f}) ≥ 90 ({at_90:.3f})", at_500 >= at_90)
            )
        if o.bystander and o.shared and o.holdout:
            drop = max(o.bystander[0] - o.bystander[1], o.shared[0] - o.shared[1])
            held = o.holdout[0] - o.holdout[1]
            checks.append(
                (
                    f"{o.domain}, {o.scenario}: others lose {drop * 100:.2f} pt (≤ 1), "
                    f"holdout {held * 100:.2f} pt (≤ 0.5)",
                    drop <= 0.01 and held <= 0.005,
                )
            )
        if o.domain == "waimai" and o.reference is None and o.bystander is None:
            checks.append(
                (
                    f"waimai, {o.scenario}: {o.labeller:.4f} vs the full-data {full_data:.4f}",
                    o.labeller >= full_data - 0.002,
                )
            )
    return checks


def plot(outcomes: list[Outcome], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (teach, harm) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for o in (o for o in outcomes if o.reference is not None):
        line = teach.plot(
            [0, *(n for n, _ in o.curve)],
            [o.base, *(a for _, a in o.curve)],
            "o-",
            label=_ascii(o.domain),
        )
        teach.axhline(o.reference, color=line[0].get_color(), linestyle=":", linewidth=1)
    teach.set_xlabel("corrections of wrong verdicts (one client)")
    teach.set_ylabel("accuracy on the domain, client's model")
    teach.set_title("One honest client teaches its own model\n(dotted: trained on all it saw)")
    teach.legend(fontsize=8)
    hostile = [o for o in outcomes if o.bystander and o.shared]
    rows = range(len(hostile))
    own = [100 * (o.labeller - o.base) for o in hostile]
    others = [
        100 * min(o.bystander[1] - o.bystander[0], o.shared[1] - o.shared[0])
        for o in hostile
        if o.bystander and o.shared
    ]
    harm.barh([r + 0.2 for r in rows], own, height=0.4, color="tab:red", label="its own model")
    harm.barh([r - 0.2 for r in rows], others, height=0.4, color="tab:blue", label="everyone else")
    harm.set_yticks(
        list(rows), [f"{_ascii(o.domain)}: {o.scenario.split(':')[0]}" for o in hostile], fontsize=6
    )
    harm.axvline(-1.0, color="grey", linestyle="--", linewidth=1)
    harm.set_xlabel("accuracy change on the domain, pt (dashed: -1 pt)")
    harm.set_title("A liar's labels change its own model only")
    harm.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def _ascii(domain: str) -> str:
    """The English half of a domain's name (the plot's font has no Chinese)."""
    return domain.split()[-1]
