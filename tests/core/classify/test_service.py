import asyncio

import pytest
from sqlmodel import Session, func, select

from core.classify.service import ReviewInput, clean_text
from core.errors import BackendUnavailable, InvalidInput
from core.models import registry
from core.store.tables import ModelStatus, Prediction, Review, Source, saved_id
from core.wiring import Core
from serving.base import Label


def classify(core: Core, *texts: str, **kwargs):
    items = [ReviewInput(text=t, **kwargs) for t in texts]
    return asyncio.run(core.classification.classify(items, source=Source.API, tenant="acme"))


def count(core: Core, table) -> int:
    with Session(core.engine) as session:
        return session.exec(select(func.count()).select_from(table)).one()


def test_a_batch_is_classified_and_stored_with_its_predictions(core: Core):
    before = count(core, Review)
    results = classify(core, "  太难吃了，送得又慢  ", "好吃，还会再来")
    assert [r.verdict.label for r in results] == [Label.NEGATIVE, Label.POSITIVE]
    assert results[0].text == "太难吃了，送得又慢"
    assert all(r.fallback is False and r.backend == "local" for r in results)
    assert count(core, Review) == before + 2
    with Session(core.engine) as session:
        stored = session.get(Prediction, results[0].prediction_id)
        assert stored is not None
        assert stored.review_id == results[0].review_id
        assert stored.model_version_id == registry.active(core.engine).id
        assert stored.confidence == pytest.approx(results[0].verdict.confidence)
        assert stored.latency_ms > 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "reviews[0].text is empty"),
        ("   \n\t ", "is empty"),
        ("好" * 2001, "2001 characters; at most 2000"),
        ("abc\x00def", "binary"),
        ("\x01\x02\u200b", "no readable characters"),
    ],
)
def test_unusable_text_is_refused_with_a_precise_message(text: str, message: str):
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        clean_text(text, 0, 2000)


def test_a_bad_review_in_a_batch_stores_nothing(core: Core):
    before = count(core, Review)
    with pytest.raises(InvalidInput, match=r"reviews\[1\]"):
        classify(core, "好吃", " ")
    assert count(core, Review) == before


def test_the_same_external_id_reuses_the_stored_review(core: Core):
    first = classify(core, "好吃", external_id="order-1")[0]
    again = classify(core, "好吃", external_id="order-1")[0]
    assert again.review_id == first.review_id
    assert again.prediction_id != first.prediction_id


def test_a_broken_active_model_falls_back_to_the_last_good_local_model(core: Core):
    good = registry.active(core.engine)
    broken = registry.register(
        core.engine, backend="local", model_ref="missing-artifact", metrics={}
    )
    registry.promote(core.engine, saved_id(broken))
    (result,) = classify(core, "好吃")
    assert result.fallback is True
    assert result.model_version_id == good.id
    assert registry.get(core.engine, saved_id(good)).status == ModelStatus.RETIRED


def test_no_usable_model_is_a_clear_error_and_stores_nothing(core: Core):
    core.settings.serving.fallbacks = []
    broken = registry.register(
        core.engine, backend="local", model_ref="missing-artifact", metrics={}
    )
    registry.promote(core.engine, saved_id(broken))
    before = count(core, Review)
    with pytest.raises(BackendUnavailable, match="missing-artifact"):
        classify(core, "好吃")
    assert count(core, Review) == before
