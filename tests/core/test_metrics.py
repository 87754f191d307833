from core.classify.service import ReviewInput
from core.store.tables import Source, saved_id
from core.wiring import Core
from serving.base import Label


async def test_reviews_classified_by_any_channel_are_counted_by_that_channel(core: Core):
    metrics = core.metrics
    for source in (Source.TELEGRAM, Source.TELEGRAM, Source.CLI):
        await core.classification.classify([ReviewInput("味道很好，还会再来")], source=source)
    text = metrics.exposition().decode()
    assert (
        'waimai_predictions_total{backend="local",channel="telegram",label="positive"} 2.0' in text
    )
    assert 'waimai_predictions_total{backend="local",channel="cli",label="positive"} 1.0' in text
    assert 'channel="api"' not in text


async def test_labels_from_telegram_are_counted_and_so_is_their_undo(core: Core):
    metrics = core.metrics
    (result,) = await core.classification.classify(
        [ReviewInput("太难吃了")], source=Source.TELEGRAM, tenant="tg:7"
    )
    label = Label(1 - result.verdict.label)
    labelled = await core.feedback.record(
        result.review_id, label, actor="tg:7", channel=Source.TELEGRAM, tenant="tg:7"
    )
    await core.feedback.revoke(saved_id(labelled.event), tenant="tg:7")
    text = metrics.exposition().decode()
    assert 'waimai_label_events_total{channel="telegram",kind="correction"} 1.0' in text
    assert 'waimai_label_events_total{channel="telegram",kind="revoked"} 1.0' in text
