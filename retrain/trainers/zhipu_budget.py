"""What a Zhipu fine-tune costs, and whether one is worth launching now.

Zhipu fine-tunes a base model only: neither the SDK's ``fine_tuning.jobs.create`` nor Zhipu's
fine-tuning guide offers to start from an earlier fine-tuned model (docs/backends.md). Every job
therefore trains on the whole snapshot and costs as much as the first. A job is launched only
when at least ``ZHIPU__FINETUNE_MIN_NEW_LABELS`` examples are new since the last fine-tune that
succeeded, when its estimate is within ``ZHIPU__FINETUNE_BUDGET``, and when the month's jobs
stay within ``ZHIPU__MONTHLY_BUDGET`` (the admins hear once a month that it would not).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from core.config import ZhipuSettings
from core.errors import NotFound
from core.models import finetunes
from core.store.outbox import FineTuneNotice
from core.store.tables import Snapshot
from core.wiring import Core
from retrain.trainers.zhipu_errors import OverBudget, TooFewNewLabels

log = logging.getLogger(__name__)

BACKEND = "zhipu"
TOKENS_PER_MESSAGE = 4
"""Role and framing tokens around each message's content."""
SNAPSHOT_FILES = ("train.jsonl", "validation.jsonl")


@dataclass(frozen=True)
class CostEstimate:
    """Training tokens × epochs × price. Tokens are counted as one per character of the message
    contents plus a few per message; ``ZHIPU__PRICE_PER_1K_TOKENS`` is calibrated to that count
    (see its setting), so the product is what Zhipu's console charged."""

    tokens_per_epoch: int
    epochs: int
    price_per_1k_tokens: float

    @property
    def cost(self) -> float:
        return self.tokens_per_epoch * self.epochs / 1000 * self.price_per_1k_tokens

    def describe(self) -> str:
        return (
            f"{self.tokens_per_epoch:,} tokens × {self.epochs} epochs × "
            f"{self.price_per_1k_tokens:g} yuan per 1k tokens ≈ {self.cost:.2f} yuan"
        )


def estimate(snapshot: Snapshot, settings: ZhipuSettings) -> CostEstimate:
    tokens = 0
    with (Path(snapshot.directory) / "train.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            for message in json.loads(line)["messages"]:
                tokens += len(message["content"]) + TOKENS_PER_MESSAGE
    return CostEstimate(tokens, settings.n_epochs, settings.price_per_1k_tokens)


def month_start(timezone: str, now: datetime | None = None) -> datetime:
    """The first moment of the current calendar month in ``timezone``, as a UTC time."""
    local = (now or datetime.now(UTC)).astimezone(ZoneInfo(timezone))
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def spent_this_month(core: Core) -> tuple[float, datetime]:
    """What the Zhipu jobs sent this month cost by their estimates, and when the month began."""
    since = month_start(core.settings.retrain.timezone)
    return finetunes.spent_since(core.engine, BACKEND, since), since


def new_examples(core: Core, snapshot: Snapshot, earlier_hash: str) -> int | None:
    """How many of the snapshot's examples (text and label) the snapshot ``earlier_hash`` lacks;
    None when the earlier snapshot's files are gone."""
    try:
        earlier = finetunes.snapshot_directory(core.engine, earlier_hash)
    except NotFound:
        return None
    return len(_examples(Path(snapshot.directory)) - _examples(earlier))


def approve(core: Core, snapshot: Snapshot, cost: CostEstimate) -> None:
    """Raise unless a fine-tune of ``snapshot`` costing ``cost`` may be launched now."""
    settings = core.settings.zhipu
    if cost.cost > settings.finetune_budget:
        raise OverBudget(
            f"not launched: {cost.describe()} is over the budget for one job "
            f"(ZHIPU__FINETUNE_BUDGET {settings.finetune_budget:g} yuan)"
        )
    last = finetunes.last_succeeded(core.engine, BACKEND)
    if last is not None:
        new = new_examples(core, snapshot, last.snapshot)
        if new is None:
            log.warning("snapshot %s is gone: new examples not counted", last.snapshot[:12])
        elif new < settings.finetune_min_new_labels:
            raise TooFewNewLabels(
                f"not launched: {new} examples are new since fine-tune job {last.id} (snapshot "
                f"{last.snapshot[:12]}), and a job trains on all of them again, for "
                f"≈{cost.cost:.2f} yuan; ZHIPU__FINETUNE_MIN_NEW_LABELS asks for "
                f"{settings.finetune_min_new_labels}"
            )
    spent, since = spent_this_month(core)
    if spent + cost.cost > settings.monthly_budget:
        reason = (
            f"not launched: {cost.describe()}, with {spent:.2f} yuan spent since "
            f"{since:%Y-%m-%d}, is over the monthly budget (ZHIPU__MONTHLY_BUDGET "
            f"{settings.monthly_budget:g} yuan)"
        )
        finetunes.tell_once_since(core.engine, FineTuneNotice("over_budget", None, reason), since)
        raise OverBudget(reason)


def _examples(directory: Path) -> set[str]:
    """The snapshot's examples, one chat-format line each (equal lines: equal examples)."""
    lines: set[str] = set()
    for name in SNAPSHOT_FILES:
        with (directory / name).open(encoding="utf-8") as file:
            lines.update(line.strip() for line in file if line.strip())
    return lines
