import asyncio

from core.config import RetrainSettings
from core.models import registry
from core.models.gate import compare
from core.store.tables import ModelStatus
from core.wiring import Core
from serving.base import Label, Verdict

POS, NEG = Label.POSITIVE, Label.NEGATIVE
RULES = RetrainSettings(margin=0.005, alpha=0.05)


def verdicts(labels: list[Label]) -> list[Verdict]:
    return [Verdict(label, 0.9, "m") for label in labels]


def test_a_candidate_as_good_as_the_active_model_is_promoted():
    truth = [POS, NEG] * 500
    decision = compare(truth, verdicts(truth), verdicts(truth), RULES)
    assert decision.promote
    assert decision.candidate_accuracy == decision.active_accuracy == 1.0


def test_a_candidate_below_the_margin_is_rejected_with_the_numbers():
    truth = [POS] * 1000
    active = verdicts([POS] * 1000)
    candidate = verdicts([NEG] * 10 + [POS] * 990)
    decision = compare(truth, candidate, active, RULES)
    assert not decision.promote
    assert "more than 0.0050 below" in decision.reason
    assert (decision.candidate_only_right, decision.active_only_right) == (0, 10)


def test_within_the_margin_but_significantly_worse_is_rejected():
    truth = [POS] * 10_000
    active = verdicts([POS] * 10_000)
    candidate = verdicts([NEG] * 40 + [POS] * 9_960)
    decision = compare(truth, candidate, active, RULES)
    assert not decision.promote
    assert "significantly worse" in decision.reason
    assert decision.p_value is not None and decision.p_value < 0.05


def test_a_candidate_that_cannot_be_evaluated_stays_a_candidate(core: Core):
    active = registry.active(core.engine)
    broken = registry.register(
        core.engine, backend="local", model_ref="no-such-artifact", metrics={}
    )
    decision = asyncio.run(core.gate.judge(broken))
    assert not decision.promote
    assert "evaluation failed" in decision.reason
    assert registry.get(core.engine, broken.id or 0).status == ModelStatus.CANDIDATE
    assert registry.active(core.engine).id == active.id


def test_every_decision_is_stored_on_the_candidate(core: Core):
    from retrain.cycle import run_cycle

    result = asyncio.run(run_cycle(core, "local", force=True))
    assert result.version is not None
    gate = result.version.metrics["gate"]
    assert {"promote", "reason", "candidate_accuracy", "active_accuracy", "p_value"} <= set(gate)
    assert result.version.note == gate["reason"]
