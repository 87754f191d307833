"""A tiny publish/subscribe the core owns: news for whoever listens (the bot tells its admins).

In-process only: a subscriber hears what is published in the same process. Subscribers are
awaited together; one that fails is logged and never stops the others or the publisher.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainRequested:
    request_id: int
    requested_by: str
    reason: str


@dataclass(frozen=True)
class RetrainFinished:
    """Published by the learning loop once the gate has judged a candidate."""

    candidate_version_id: int | None
    promoted: bool
    reason: str
    """Why, in a sentence (e.g. the holdout accuracies compared)."""


Event = RetrainRequested | RetrainFinished
Subscriber = Callable[[Event], Awaitable[None]]


class Notifications:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns the function that removes it again."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    async def publish(self, event: Event) -> None:
        subscribers = list(self._subscribers)
        results = await asyncio.gather(
            *(subscriber(event) for subscriber in subscribers), return_exceptions=True
        )
        for subscriber, result in zip(subscribers, results, strict=True):
            if isinstance(result, BaseException):
                log.error(
                    "subscriber %r failed on %s: %r", subscriber, type(event).__name__, result
                )
