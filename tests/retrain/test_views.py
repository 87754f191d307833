"""Tenants' own views through the real core: one client teaches itself a new kind of review, and a
client that lies changes nobody's model but its own."""

import asyncio
from pathlib import Path

import pandas as pd
import pytest

from core.classify.service import ReviewInput
from core.models import registry
from core.store.tables import ModelStatus, Source
from core.wiring import Core
from retrain.cycle import run_cycle
from serving.base import Classifier, Label, Verdict

OTHER_DOMAINS = Path(__file__).resolve().parents[3] / "shared" / "data"
OTHER_DOMAINS /= "online_shopping_fruit_clothes.csv"


@pytest.fixture(scope="module")
def fruit() -> tuple[list[tuple[str, Label]], list[tuple[str, Label]]]:
    """Fruit-shop reviews (not takeaway food): a stream of 1,200 and 300 others to measure."""
    if not OTHER_DOMAINS.is_file():
        pytest.skip(f"the new-domain reviews are not at {OTHER_DOMAINS}")
    frame = pd.read_csv(OTHER_DOMAINS)
    frame = frame[frame.cat == "水果"].sample(n=1500, random_state=3)
    rows = [
        (str(text), Label(int(label)))
        for text, label in zip(frame.review, frame.label, strict=True)
    ]
    return rows[:1200], rows[1200:]


def accuracy(core: Core, classifier: Classifier, rows: list[tuple[str, Label]]) -> float:
    answers = asyncio.run(classifier.classify([text for text, _ in rows]))
    right = [
        isinstance(a, Verdict) and a.label == y for a, (_, y) in zip(answers, rows, strict=True)
    ]
    return sum(right) / len(rows)


def served(core: Core, tenant: str) -> Classifier:
    view = core.tenant_views.of(tenant)
    if view is not None:
        return core.backends.for_view(view)
    return core.backends.for_version(registry.active(core.engine))


def stream(core: Core, tenant: str, rows: list[tuple[str, Label]], *, lie: bool) -> int:
    """Classify the rows for ``tenant``, then correct every wrong verdict (or, lying, "correct"
    the right ones to the wrong label); the number of corrections."""
    results = asyncio.run(
        core.classification.classify(
            [ReviewInput(text) for text, _ in rows], source=Source.API, tenant=tenant
        )
    )
    corrections = 0
    for result, (_, truth) in zip(results, rows, strict=True):
        right = result.verdict.label == truth
        if right == lie:
            said = Label(1 - truth) if lie else truth
            asyncio.run(
                core.feedback.record(
                    result.review_id, said, actor=tenant, channel=Source.API, tenant=tenant
                )
            )
            corrections += 1
    return corrections


@pytest.mark.slow
def test_one_client_correcting_a_new_kind_of_review_teaches_its_own_view(core: Core, fruit):
    rows, measured = fruit
    before = accuracy(core, served(core, "grocer"), measured)
    shared_before = registry.active(core.engine)

    assert stream(core, "grocer", rows, lie=False) > 50
    result = asyncio.run(run_cycle(core, "local"))

    assert result.outcome == "views", "one tenant's labels leave the shared data as it was"
    (view,) = result.views
    assert view.status == ModelStatus.ACTIVE and view.tenant == "grocer"
    assert view.metrics["left_alone"] > 500, "the verdicts it saw and kept count as confirmed"
    assert accuracy(core, served(core, "grocer"), measured) >= before + 0.02
    assert accuracy(core, served(core, "someone-else"), measured) == before
    assert registry.active(core.engine).id == shared_before.id

    (answer,) = asyncio.run(
        core.classification.classify([ReviewInput("苹果很甜")], source=Source.API, tenant="grocer")
    )
    assert answer.tenant_view_id == view.id
    (other,) = asyncio.run(
        core.classification.classify([ReviewInput("苹果很甜")], source=Source.API, tenant="x")
    )
    assert other.tenant_view_id is None


@pytest.mark.slow
def test_a_client_flipping_right_verdicts_changes_no_other_tenants_model(core: Core, fruit):
    rows, measured = fruit
    honest_before = accuracy(core, served(core, "honest"), measured)
    shared = registry.active(core.engine)

    assert stream(core, "liar", rows, lie=True) > 500
    result = asyncio.run(run_cycle(core, "local"))

    assert registry.active(core.engine).id == shared.id, "the shared model is untouched"
    assert accuracy(core, served(core, "honest"), measured) == honest_before
    assert all(view.tenant == "liar" for view in result.views)
    liar_view = core.tenant_views.of("liar")
    if liar_view is not None:  # served only if it still knows takeaway reviews
        assert liar_view.metrics["accuracy"] >= shared.metrics["accuracy"] - 0.02


def test_a_view_is_trained_once_for_the_same_data(core: Core, fruit):
    rows, _ = fruit
    stream(core, "grocer", rows[:200], lie=False)
    first = asyncio.run(run_cycle(core, "local"))
    again = asyncio.run(run_cycle(core, "local"))
    assert first.outcome == "views" and len(first.views) == 1
    assert again.outcome == "skipped" and not again.views
