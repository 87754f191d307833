"""The core's publish/subscribe, and retrain requests that publish on it."""

from __future__ import annotations

import asyncio
import logging

from sqlmodel import Session, select

from core.notifications import Event, Notifications, RetrainFinished, RetrainRequested
from core.tables import RetrainRequest
from core.wiring import Core


def test_subscribers_hear_events_and_one_failing_does_not_stop_the_others(caplog):
    notifications = Notifications()
    heard: list[Event] = []

    async def listener(event: Event) -> None:
        heard.append(event)

    async def broken(event: Event) -> None:
        raise RuntimeError("cannot send")

    notifications.subscribe(broken)
    unsubscribe = notifications.subscribe(listener)
    finished = RetrainFinished(3, promoted=True, reason="better")
    with caplog.at_level(logging.ERROR):
        asyncio.run(notifications.publish(finished))
    assert heard == [finished]
    assert "cannot send" in caplog.text
    unsubscribe()
    asyncio.run(notifications.publish(finished))
    assert heard == [finished]


def test_retrain_requests_coalesce_while_pending(core: Core):
    heard: list[Event] = []

    async def listener(event: Event) -> None:
        heard.append(event)

    core.notifications.subscribe(listener)
    first = asyncio.run(core.retrain_requests.request(requested_by="telegram:1", reason="/retrain"))
    again = asyncio.run(core.retrain_requests.request(requested_by="telegram:2"))
    assert first.new
    assert not again.new
    assert again.request.id == first.request.id
    assert heard == [RetrainRequested(first.request.id or 0, "telegram:1", "/retrain")]
    with Session(core.engine) as session:
        assert len(session.exec(select(RetrainRequest)).all()) == 1
