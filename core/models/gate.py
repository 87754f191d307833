"""The promotion gate: a candidate replaces the active model only if it is not worse.

Both are evaluated on the frozen holdout through the same Classifier interface the service
uses. The candidate is promoted when its accuracy is at most ``margin`` below the active
model's and an exact McNemar test on the rows where they disagree does not find it worse at
level ``alpha``. Every decision is stored on the candidate with its numbers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Any

from scipy.stats import binomtest

from core.config import RetrainSettings
from core.models import registry
from core.models.dataset import load_split
from core.models.evaluation import classify_all, metrics
from core.store.tables import ModelVersion, Split
from core.wiring import Core
from serving.base import BackendError, Label, Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    candidate_accuracy: float | None
    active_accuracy: float | None
    candidate_only_right: int = 0
    """Holdout rows the candidate gets right and the active model wrong (McNemar's b)."""
    active_only_right: int = 0
    p_value: float | None = None


def compare(
    labels: list[Label], candidate: list[Verdict], active: list[Verdict], rules: RetrainSettings
) -> Decision:
    """The decision from two models' verdicts on the same holdout rows."""
    right_c = [v.label == y for v, y in zip(candidate, labels, strict=True)]
    right_a = [v.label == y for v, y in zip(active, labels, strict=True)]
    b = sum(c and not a for c, a in zip(right_c, right_a, strict=True))
    c = sum(a and not c_ for c_, a in zip(right_c, right_a, strict=True))
    acc_c, acc_a = sum(right_c) / len(labels), sum(right_a) / len(labels)
    p_value = float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0

    def decision(promote: bool, reason: str) -> Decision:
        return Decision(promote, reason, round(acc_c, 4), round(acc_a, 4), b, c, round(p_value, 4))

    if acc_c < acc_a - rules.margin:
        return decision(
            False,
            f"accuracy {acc_c:.4f} is more than {rules.margin:.4f} below the active "
            f"model's {acc_a:.4f}",
        )
    if c > b and p_value < rules.alpha:
        return decision(
            False,
            f"significantly worse than the active model (McNemar p={p_value:.3f}, {b} vs {c})",
        )
    return decision(
        True, f"accuracy {acc_c:.4f} vs {acc_a:.4f} (McNemar p={p_value:.3f}): not worse"
    )


async def judge(core: Core, candidate: ModelVersion) -> Decision:
    """Evaluate the candidate against the active model and promote or reject it.

    If either model cannot be evaluated, the candidate stays a candidate and nothing changes.
    """
    assert candidate.id is not None
    texts, labels = await asyncio.to_thread(load_split, core.engine, Split.TEST)
    active = await asyncio.to_thread(registry.active_or_none, core.engine)
    try:
        candidate_verdicts = await classify_all(core.backends.for_version(candidate), texts)
        if active is None:
            decision = Decision(
                True, "no model was active", _accuracy(labels, candidate_verdicts), None
            )
        else:
            active_verdicts = await classify_all(core.backends.for_version(active), texts)
            decision = compare(labels, candidate_verdicts, active_verdicts, core.settings.retrain)
    except (BackendError, OSError, ValueError) as error:
        log.warning("candidate %s could not be evaluated: %s", candidate.id, error)
        return Decision(False, f"evaluation failed, left as a candidate: {error}", None, None)

    figures: dict[str, Any] = (
        candidate.metrics | metrics(labels, candidate_verdicts) | {"gate": asdict(decision)}
    )
    await asyncio.to_thread(
        registry.decide, core.engine, candidate.id, decision.promote, decision.reason, figures
    )
    return decision


def _accuracy(labels: list[Label], verdicts: list[Verdict]) -> float:
    return round(sum(v.label == y for v, y in zip(verdicts, labels, strict=True)) / len(labels), 4)
