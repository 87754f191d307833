"""Drift alerts over the real store: told once, cleared, told again; the gauges follow."""

from __future__ import annotations

from sqlmodel import Session, func, select

from core.classify.service import ReviewInput
from core.config import AlertSettings
from core.store.tables import DriftAlert, Notification, Prediction, Review, Source, saved_id
from core.wiring import Core
from serving.base import Label

SHOP = "shop-7"
REVIEWS = ["太慢了，菜都凉了", "味道很好，还会再点", "一般般吧", "分量足，送得快"]


async def labelled(core: Core, tenant: str, corrections: int, confirmations: int) -> None:
    """``corrections`` + ``confirmations`` of the tenant's own reviews, labelled by it."""
    items = [ReviewInput(f"{REVIEWS[i % 4]} #{i}") for i in range(corrections + confirmations)]
    results = await core.classification.classify(items, source=Source.API, tenant=tenant)
    for i, result in enumerate(results):
        label = result.verdict.label if i >= corrections else Label(1 - result.verdict.label)
        await core.feedback.record(
            result.review_id, label, actor=tenant, channel=Source.API, tenant=tenant
        )


def notices(core: Core) -> int:
    with Session(core.engine) as session:
        return session.exec(select(func.count()).where(Notification.kind == "DriftNotice")).one()


def alerts(core: Core) -> list[str]:
    with Session(core.engine) as session:
        return sorted(a.key for a in session.exec(select(DriftAlert)))


async def test_a_merchant_correcting_most_verdicts_is_told_once_then_cleared_then_told_again(
    core: Core,
):
    core.settings.alerts = AlertSettings(correction_rate=0.3, min_labels=10)
    metrics = core.metrics
    await labelled(core, SHOP, corrections=8, confirmations=4)
    await labelled(core, "quiet-shop", corrections=1, confirmations=11)

    report = await core.drift.check()
    assert [(n.kind, n.tenant, n.rate, n.count) for n in report.raised] == [
        ("correction_rate", SHOP, round(8 / 12, 4), 12)
    ]
    assert alerts(core) == [f"correction_rate:{SHOP}"]
    assert notices(core) == 1
    text = metrics.exposition().decode()
    assert f'waimai_correction_rate{{tenant="{SHOP}"}} 0.666' in text
    assert 'waimai_correction_rate{tenant="quiet-shop"} 0.083' in text

    assert (await core.drift.check()).raised == []
    assert notices(core) == 1, "told once while the rate stays above"

    await labelled(core, SHOP, corrections=0, confirmations=20)
    cleared = await core.drift.check()
    assert cleared.cleared == [f"correction_rate:{SHOP}"]
    assert alerts(core) == []

    await labelled(core, SHOP, corrections=40, confirmations=0)
    again = await core.drift.check()
    assert [n.tenant for n in again.raised] == [SHOP]
    assert notices(core) == 2


async def test_too_few_labels_raise_nothing_and_a_fallback_share_does(core: Core):
    core.settings.alerts = AlertSettings(
        correction_rate=0.3, min_labels=50, fallback_rate=0.2, min_predictions=10
    )
    await labelled(core, SHOP, corrections=12, confirmations=0)
    assert (await core.drift.check()).raised == []

    with Session(core.engine) as session:
        for i in range(20):
            review = Review(text=f"评论 {i}", text_hash=str(i), source=Source.TELEGRAM, tenant=SHOP)
            session.add(review)
            session.flush()
            session.add(
                Prediction(
                    review_id=saved_id(review),
                    backend="local",
                    model_id="local:x",
                    label=1,
                    latency_ms=1.0,
                    fallback=i % 2 == 0,
                )
            )
        session.commit()
    report = await core.drift.check()
    (notice,) = report.raised
    assert (notice.kind, notice.tenant) == ("fallback_rate", None)
    assert notice.rate > 0.2 and notice.count >= 20
