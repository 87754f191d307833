"""The promotion gate: a candidate replaces the active model only if it is not worse.

Both are evaluated on the frozen holdout through the same Classifier interface the service
uses. The candidate is promoted when its accuracy is at most ``margin`` below the active
model's and an exact McNemar test on the rows where they disagree does not find it worse at
level ``alpha``. Every decision is stored on the candidate with its numbers.

Every way in goes through it: the loop's candidates (``judge``) and promotions by hand from the
command line, the API and the operator page (``promote``), where an explicit ``force``
overrides it and is recorded on the version.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from scipy.stats import binomtest

from core.config import RetrainSettings
from core.errors import BackendUnavailable, Conflict
from core.models.dataset import Dataset
from core.models.evaluation import classify_all, metrics
from core.models.registry import ModelVersions
from core.store.tables import ModelStatus, ModelVersion, saved_id, utcnow
from serving.base import Answer, BackendConfigError, BackendError, Classifier, Label, Verdict

log = logging.getLogger(__name__)

GATE_REFUSED = "gate_refused"
"""The code of the Conflict for a promotion the gate refused."""
ADAPTER_REFUSED = "adapter_refused"
"""The code of the BackendUnavailable for a version its backend refuses to serve."""

CANARY_REVIEWS = (
    "很快，好吃，味道足，量大",
    "送餐太慢了，菜都凉了，再也不点了",
    "味道不错，分量足，还会再点",
    "等了两个小时，饭是冷的",
)
"""Asked of a version before it serves: it must answer each of them."""


class Loader(Protocol):
    def for_version(self, version: ModelVersion) -> Classifier: ...


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
    active_version_id: int | None = None
    """The version the candidate was compared with."""


def compare(
    labels: Sequence[Label],
    candidate: Sequence[Answer],
    active: Sequence[Answer],
    rules: RetrainSettings,
) -> Decision:
    """The decision from two models' answers on the same holdout rows (a declined row is wrong)."""
    right_c = _right(labels, candidate)
    right_a = _right(labels, active)
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


class Gate:
    """The holdout gate over the registry: judges the loop's candidates, promotes by hand."""

    def __init__(
        self, versions: ModelVersions, dataset: Dataset, backends: Loader, rules: RetrainSettings
    ) -> None:
        self._versions = versions
        self._dataset = dataset
        self._backends = backends
        self._rules = rules

    async def judge(self, candidate: ModelVersion) -> Decision:
        """Evaluate the candidate against the active model and promote or reject it.

        If either model cannot be evaluated, the candidate stays a candidate and nothing changes.
        """
        try:
            decision, figures = await self.assess(candidate)
        except (BackendError, OSError, ValueError) as error:
            log.warning("candidate %s could not be evaluated: %s", candidate.id, error)
            return Decision(False, f"evaluation failed, left as a candidate: {error}", None, None)
        await self._versions.decide(saved_id(candidate), decision.promote, decision.reason, figures)
        return decision

    async def assess(self, version: ModelVersion) -> tuple[Decision, dict[str, Any]]:
        """The decision on ``version`` against the active model, and the figures to store with
        it; raises BackendError (or OSError, ValueError) when either cannot be evaluated."""
        texts, labels = await self._dataset.holdout()
        active = await self._versions.active_or_none()
        answers = await classify_all(self._backends.for_version(version), texts)
        if active is None:
            decision = Decision(True, "no model was active", _accuracy(labels, answers), None)
        else:
            active_answers = await classify_all(self._backends.for_version(active), texts)
            compared = compare(labels, answers, active_answers, self._rules)
            decision = replace(compared, active_version_id=active.id)
        figures = version.metrics | metrics(labels, answers) | {"gate": asdict(decision)}
        return decision, figures

    async def promote(self, version_id: int, *, by: str, force: bool = False) -> ModelVersion:
        """Promote a version by hand: it must answer the canary reviews (which loads a vLLM
        adapter the server lacks), then pass the gate unless ``force``, which the version
        records. A refusal is a Conflict ``gate_refused`` with the gate's reason (a candidate is
        then rejected, as the loop would); the active version keeps serving."""
        version = await self._versions.get(version_id)
        if version.status == ModelStatus.ACTIVE:
            raise Conflict(f"model version {version_id} is already active")
        if not force:
            await self._refuse_again(version)
        await self.canaries(version)
        if force:
            forced = {"by": by, "at": utcnow().isoformat(), "status_before": str(version.status)}
            note = f"promoted by {by}, forced past the gate"
            return await self._versions.promote(
                version_id, note, version.metrics | {"forced": forced}
            )
        try:
            decision, figures = await self.assess(version)
        except (BackendError, OSError, ValueError) as error:
            raise BackendUnavailable(
                f"model version {version_id} could not be judged on the holdout: {error}"
            ) from error
        if not decision.promote:
            if version.status == ModelStatus.CANDIDATE:
                await self._versions.decide(version_id, False, decision.reason, figures)
            raise Conflict(
                f"the gate keeps model version {version_id} out: {decision.reason} "
                "(force overrides the gate, and is recorded)",
                code=GATE_REFUSED,
            )
        return await self._versions.promote(
            version_id, f"promoted by {by}: {decision.reason}", figures
        )

    async def _refuse_again(self, version: ModelVersion) -> None:
        """A version the gate already refused against the version active now is refused at once
        with that decision: judging it again would give the same answer, after classifying the
        holdout twice (hours through a remote backend's batch queue)."""
        decision = version.metrics.get("gate") or {}
        if decision.get("promote") is not False:
            return
        active = await self._versions.active_or_none()
        if active is not None and decision.get("active_version_id") == active.id:
            raise Conflict(
                f"the gate keeps model version {version.id} out: {decision['reason']} "
                f"(judged against version {active.id}, active still; force overrides the gate, "
                "and is recorded)",
                code=GATE_REFUSED,
            )

    async def canaries(self, version: ModelVersion) -> list[Verdict]:
        """The version's verdicts on the canary reviews. A backend that refuses the version (a
        vLLM server refusing its adapter) rejects it, with the reason: BackendUnavailable
        ``adapter_refused``; one that cannot be asked changes nothing: BackendUnavailable."""
        classifier = self._backends.for_version(version)
        try:
            await classifier.probe()
            return _answered_all(await classifier.classify(CANARY_REVIEWS))
        except BackendConfigError as refusal:
            reason = f"{version.backend} refused model version {version.id}: {refusal}"
            if version.status == ModelStatus.CANDIDATE:
                await self._versions.decide(saved_id(version), False, reason, version.metrics)
            raise BackendUnavailable(reason, code=ADAPTER_REFUSED) from refusal
        except (BackendError, OSError, ValueError) as error:
            raise BackendUnavailable(
                f"model version {version.id} could not be asked the canary reviews: {error}"
            ) from error


def _answered_all(answers: Sequence[Answer]) -> list[Verdict]:
    """The verdicts, or BackendError if the backend declined any."""
    verdicts = [a for a in answers if isinstance(a, Verdict)]
    if len(verdicts) != len(answers):
        raise BackendError(f"declined {len(answers) - len(verdicts)} of {len(answers)} reviews")
    return verdicts


def _right(labels: Sequence[Label], answers: Sequence[Answer]) -> list[bool]:
    return [isinstance(a, Verdict) and a.label == y for a, y in zip(answers, labels, strict=True)]


def _accuracy(labels: Sequence[Label], answers: Sequence[Answer]) -> float:
    return round(sum(_right(labels, answers)) / len(labels), 4)
